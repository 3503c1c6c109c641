"""The training loop: frozen parts stay frozen, the schedule, and exact resume after a crash."""

import pytest
import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.model.vlm import part_of
from mimolab.train import Stage, Trainer

CFG = MiMoVLConfig.from_name("smoke")
SHARES = {"caption": 0.5, "counting": 0.3, "text": 0.2}


@pytest.fixture(scope="module")
def processor():
    return world_processor(world_tokenizer(n_per_task=3))


def make(processor, stage, run_dir, seed=0):
    torch.manual_seed(seed)
    model = MiMoVL(CFG)
    sampler = world_mixture(stage.shares, processor, CFG, max_length=stage.row_tokens, seed=stage.seed)
    return Trainer(model, stage, sampler, run_dir)


def test_projector_only_stage_freezes_everything_else(processor, tmp_path):
    stage = Stage(name="stage1", lr={"projector": 1e-2}, shares=SHARES, steps=3, warmup_steps=1, row_tokens=512,
                  rows_per_step=2, checkpoint_every=100)
    trainer = make(processor, stage, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    state_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"] if p in trainer.optimizer.state}
    for name, param in trainer.model.named_parameters():
        if part_of(name) == "projector":
            assert not torch.equal(param, before[name]), name  # trained
            assert id(param) in state_params
        else:
            assert torch.equal(param, before[name]), name  # bit-identical
            assert param.grad is None and not param.requires_grad and id(param) not in state_params


def test_weight_decay_shrinks_matrices_only(processor, tmp_path):
    # AdamW decays w by lr * wd * w: one step of a decayed run and of an undecayed one from the same
    # weights and data (so the same gradients) differ in the matrices only; norms and biases stay bit-identical
    def run(weight_decay):
        stage = Stage(name="s", lr={"projector": 1e-2, "llm": 1e-2}, shares=SHARES, steps=1, warmup_steps=1,
                      row_tokens=512, rows_per_step=1, checkpoint_every=100, weight_decay=weight_decay)
        trainer = make(processor, stage, tmp_path / str(weight_decay))
        trainer.train()
        return dict(trainer.model.named_parameters()), trainer.optimizer.param_groups

    plain, _ = run(0.0)
    decayed, groups = run(0.5)
    assert {g["weight_decay"] for g in groups if g["params"][0].dim() < 2} == {0.0}
    assert {g["weight_decay"] for g in groups if g["params"][0].dim() >= 2} == {0.5}
    for name, param in decayed.items():
        if part_of(name) not in ("projector", "llm"):
            continue
        if param.dim() >= 2:
            assert not torch.equal(param, plain[name]), name
        else:
            assert torch.equal(param, plain[name]), name


def test_training_leaves_the_callers_random_state_alone(processor, tmp_path):
    """The loop draws from its own generator (dropout, LoRA's start): the caller's global RNG does not
    move, and two runs of the same stage give the same losses whatever the caller drew before."""
    import random

    stage = Stage(name="s", lr={"llm": 1e-2}, shares=SHARES, steps=2, warmup_steps=1, row_tokens=256,
                  rows_per_step=1, checkpoint_every=100, lora={"parts": ("llm",), "r": 4})
    losses = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        random.seed(caller_seed)
        torch_state, python_state = torch.get_rng_state(), random.getstate()
        sampler = world_mixture(stage.shares, processor, CFG, max_length=stage.row_tokens, seed=stage.seed)
        with torch.random.fork_rng():  # the same start weights in both runs
            torch.manual_seed(0)
            model = MiMoVL(CFG)
        trainer = Trainer(model, stage, sampler, tmp_path / str(caller_seed))
        losses.append([r["loss"] for r in trainer.train(progress=False)])
        assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert losses[0] == losses[1]


def test_warmup_then_cosine():
    stage = Stage(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert stage.lr_factor(0) == pytest.approx(0.1) and stage.lr_factor(9) == pytest.approx(1.0)
    assert stage.lr_factor(60) == pytest.approx(0.55) and stage.lr_factor(110) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown trainable parts"):
        Stage(lr={"decoder": 1.0})


def test_resumed_run_matches_an_uninterrupted_one(processor, tmp_path):
    stage = Stage(name="stage3", lr={"vision": 1e-3, "projector": 1e-3, "llm": 1e-3}, shares=SHARES, steps=6,
                  warmup_steps=2, row_tokens=384, rows_per_step=2, checkpoint_every=3)
    straight = make(processor, stage, tmp_path / "straight").train()
    crashed = make(processor, stage, tmp_path / "crashed")
    crashed.train(steps=3)  # ... and the process dies here; a new one starts from the checkpoint
    resumed = make(processor, stage, tmp_path / "crashed", seed=123)
    assert resumed.resume() and resumed.step == 3
    tail = resumed.train()
    assert [r["loss"] for r in tail] == pytest.approx([r["loss"] for r in straight[3:]], abs=1e-6)
    assert (tmp_path / "crashed" / "checkpoints" / "step-000006" / "model" / "config.json").exists()
    reloaded = MiMoVL.from_pretrained(tmp_path / "crashed" / "checkpoints" / "step-000006" / "model")
    torch.testing.assert_close(dict(reloaded.state_dict()), dict(resumed.model.state_dict()))


def test_metrics_are_logged_per_step_and_task(processor, tmp_path):
    stage = Stage(lr={"llm": 1e-3}, shares=SHARES, steps=2, warmup_steps=1, row_tokens=512, rows_per_step=2)
    make(processor, stage, tmp_path).train()
    import json
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert {"loss", "grad_norm", "tokens_per_s", "packing_efficiency", "lr/llm"} <= set(records[0])
    assert any(k.startswith("loss/") for k in records[0])


def test_per_sample_losses_equal_each_sample_alone():
    from mimolab.train.loop import per_sample_losses

    torch.manual_seed(0)
    logits = torch.randn(1, 10, 7)
    labels = torch.tensor([[1, 2, 3, 4, -100, 5, 6, 0, 1, 2]])
    cu = torch.tensor([0, 4, 7, 10])
    got = per_sample_losses(logits, labels, cu)
    ce = torch.nn.functional.cross_entropy
    assert got[0] == pytest.approx(float(ce(logits[0, 0:3], labels[0, 1:4])))
    assert got[1] == pytest.approx(float(ce(logits[0, 4:6], labels[0, 5:7])))  # a sample never predicts its first token
    assert got[2] == pytest.approx(float(ce(logits[0, 7:9], labels[0, 8:10])))


def test_sample_weighting_is_the_mean_of_each_sample_alone(processor):
    # a packed row under loss_weighting="sample": the loss and its gradient equal those of the mean of
    # the samples' own (token-mean) losses, each sample run alone; token weighting would differ
    from mimolab.data.packing import collate_packed
    from mimolab.train.loop import sample_weighted_loss

    stream = iter(world_mixture(SHARES, processor, CFG, max_length=512))
    samples = [next(stream) for _ in range(5)]
    assert len({sum(l != -100 for l in s.labels) for s in samples}) > 1  # different numbers of targets
    torch.manual_seed(0)
    model = MiMoVL(CFG)
    row = collate_packed(samples, sum(len(s) for s in samples), CFG.pad_token_id)
    packed = sample_weighted_loss(model(**row.model_inputs()).logits, row.labels, row.cu_seqlens, len(samples))
    packed_grads = torch.autograd.grad(packed, list(model.parameters()), allow_unused=True)
    alone = sum(model(**collate_packed([s], len(s), CFG.pad_token_id).model_inputs()).loss for s in samples) / len(samples)
    alone_grads = torch.autograd.grad(alone, list(model.parameters()), allow_unused=True)
    assert float(packed) == pytest.approx(float(alone), rel=1e-5)
    for a, b in zip(packed_grads, alone_grads):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6, rtol=1e-4))
    token_mean = model(**row.model_inputs()).loss
    assert abs(float(token_mean) - float(alone)) > 1e-3


def test_what_a_kill_leaves_among_the_checkpoints_is_cleaned_up_on_resume(tmp_path):
    """A kill mid-write leaves a temporary sibling (``.step-N.tmp-*``); a kill between the two renames of
    a replace leaves the finished step moved aside (``.step-N.old-*``). The next look for the latest
    checkpoint removes the first and puts the second back."""
    from mimolab.train.checkpoints import latest_checkpoint

    folder = tmp_path / "checkpoints"
    (folder / "step-000002").mkdir(parents=True)
    (folder / ".step-000004.tmp-abc").mkdir()  # half-written: must not count as step 4
    (folder / ".step-000003.old-99").mkdir()  # step 3, moved aside and never replaced
    (folder / ".step-000003.old-99" / "trainer_state.pt").write_text("kept")
    assert latest_checkpoint(tmp_path) == folder / "step-000003"
    assert (folder / "step-000003" / "trainer_state.pt").read_text() == "kept"
    assert sorted(p.name for p in folder.iterdir()) == ["step-000002", "step-000003"]
