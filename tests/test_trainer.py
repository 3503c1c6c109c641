"""The training loop: frozen parts stay frozen, the schedule, and exact resume after a crash."""

import dataclasses

import pytest
import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.model.vlm import part_of
from mimolab.train import Stage, Trainer
from mimolab.train.stage import cpu_has_bf16

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


@pytest.mark.parametrize("bf16", [False, True])
def test_resumed_run_matches_an_uninterrupted_one(processor, tmp_path, bf16):
    stage = Stage(name="stage3", lr={"vision": 1e-3, "projector": 1e-3, "llm": 1e-3}, shares=SHARES, steps=6,
                  warmup_steps=2, row_tokens=384, rows_per_step=2, checkpoint_every=3, bf16=bf16)
    straight = make(processor, stage, tmp_path / "straight").train()
    crashed = make(processor, stage, tmp_path / "crashed")
    crashed.train(steps=3)  # ... and the process dies here; a new one starts from the checkpoint
    resumed = make(processor, stage, tmp_path / "crashed", seed=123)
    assert resumed.resume() and resumed.step == 3
    tail = resumed.train()
    assert [r["loss"] for r in tail] == [r["loss"] for r in straight[3:]]  # bit-identical
    assert (tmp_path / "crashed" / "checkpoints" / "step-000006" / "model" / "config.json").exists()
    reloaded = MiMoVL.from_pretrained(tmp_path / "crashed" / "checkpoints" / "step-000006" / "model")
    torch.testing.assert_close(dict(reloaded.state_dict()), dict(resumed.model.state_dict()))


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bfloat16 matrix instructions: bf16 trains in fp32")
def test_bf16_stage_learns_like_fp32_with_float32_master_weights(processor, tmp_path):
    """bf16 autocast on a CPU: on the same weights and rows, the first step's loss within bfloat16's error of
    fp32's (yet not equal: the products did run in bfloat16); parameters, gradients and AdamW's moments stay
    float32, and the step after moves the loss the way fp32's does."""
    stage = Stage(name="s", lr={"vision": 1e-3, "projector": 1e-3, "llm": 1e-3}, shares=SHARES, steps=2,
                  warmup_steps=1, row_tokens=512, rows_per_step=2, checkpoint_every=100)
    fp32 = make(processor, stage, tmp_path / "fp32").train(progress=False)
    trainer = make(processor, dataclasses.replace(stage, bf16=True), tmp_path / "bf16")
    bf16 = trainer.train(progress=False)
    assert bf16[0]["loss"] != fp32[0]["loss"]
    for a, b in zip(bf16, fp32):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3)  # half of bfloat16's 2^-8 rounding step
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    moments = [t for state in trainer.optimizer.state.values() for k, t in state.items() if k != "step"]
    assert len(moments) == 2 * len(params) and all(t.dtype == torch.float32 for t in moments)
    row = trainer.next_rows()[0]
    loss, _, _ = trainer._row_loss(row, n_targets=1, n_samples=1)
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in params if p.grad is not None)
    assert any(p.grad is not None for p in params)


def test_bf16_without_bf16_instructions_trains_in_float32(processor, tmp_path, monkeypatch):
    """On a CPU that would emulate bfloat16 (slower than float32), a bf16 stage warns and trains in float32."""
    import mimolab.train.stage as stage_module

    monkeypatch.setattr(stage_module, "cpu_has_bf16", lambda: False)
    stage = Stage(name="s", lr={"llm": 1e-3}, shares=SHARES, steps=1, warmup_steps=1, row_tokens=256, rows_per_step=1)
    fp32 = make(processor, stage, tmp_path / "fp32").train(progress=False)
    with pytest.warns(UserWarning, match="no bfloat16 matrix instructions"):
        bf16 = make(processor, dataclasses.replace(stage, bf16=True), tmp_path / "bf16").train(progress=False)
    assert bf16[0]["loss"] == fp32[0]["loss"]


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


@pytest.mark.parametrize("weighting", ["sample", "token"])
def test_row_loss_weights_samples_or_tokens_as_each_sample_alone(processor, tmp_path, weighting):
    # a packed row through the Trainer's row loss (the head reads only the positions with a target): under
    # "sample" its loss and gradient equal the mean of the samples' own (token-mean) losses, each sample run
    # alone with full logits; under "token", the mean over all the row's targets; the two differ
    from mimolab.data.packing import collate_packed

    stream = iter(world_mixture(SHARES, processor, CFG, max_length=512))
    samples = [next(stream) for _ in range(5)]
    counts = [sum(l != -100 for l in s.labels[1:]) for s in samples]
    assert len(set(counts)) > 1  # different numbers of targets
    stage = Stage(lr={"llm": 1e-3, "vision": 1e-3, "projector": 1e-3}, shares=SHARES, loss_weighting=weighting)
    trainer = make(processor, stage, tmp_path)
    model = trainer.model
    row = collate_packed(samples, sum(len(s) for s in samples), CFG.pad_token_id)
    packed, _, _ = trainer._row_loss(row, n_targets=sum(counts), n_samples=len(samples))
    packed_grads = torch.autograd.grad(packed, list(model.parameters()), allow_unused=True)
    alone = [model(**collate_packed([s], len(s), CFG.pad_token_id).model_inputs()).loss for s in samples]
    expected = (sum(alone) / len(samples) if weighting == "sample"
                else sum(loss * n for loss, n in zip(alone, counts)) / sum(counts))
    expected_grads = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    assert float(packed.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    for a, b in zip(packed_grads, expected_grads):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6, rtol=1e-4))
    with torch.no_grad():
        assert abs(float(sum(alone).detach()) / len(samples) - float(model(**row.model_inputs()).loss)) > 1e-3


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


def test_compiled_layers_train_as_the_eager_ones(processor, tmp_path):
    """``Stage.compile``: the training steps run the decoder layers and ViT blocks compiled (inductor), with the
    eager steps' numbers to float32 rounding (the fused kernels sum in another order), one graph per kind of block
    whatever the packing's lengths (not a graph per packing), the evaluation forward eager (bit-identical to
    the uncompiled model's), and the modules' own parameters and state-dict keys."""
    from torch._dynamo.utils import counters

    stage = Stage(name="s", lr={"vision": 1e-3, "projector": 1e-3, "llm": 1e-3}, shares=SHARES, steps=4,
                  warmup_steps=1, row_tokens=384, rows_per_step=2, checkpoint_every=100)
    eager = make(processor, stage, tmp_path / "eager")
    eager_log = eager.train(progress=False)
    compiled = make(processor, dataclasses.replace(stage, compile=True), tmp_path / "compiled")
    before = counters["stats"]["unique_graphs"]
    compiled_log = compiled.train(steps=1, progress=False)
    first = counters["stats"]["unique_graphs"] - before
    assert first > 0  # the step did compile
    compiled_log += compiled.train(progress=False)
    # three more steps of other lengths: a few graphs more at most (a branch the first rows did not take, sizes that
    # happened to coincide), not a graph per packing
    assert counters["stats"]["unique_graphs"] - before < 1.5 * first
    assert len(compiled_log) == len(eager_log) == 4
    for a, b in zip(compiled_log, eager_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert dict(compiled.model.state_dict()).keys() == dict(eager.model.state_dict()).keys()
    # Adam moves a weight by up to lr (1e-3) a step whatever its gradient's size: within a tenth of one step
    torch.testing.assert_close(dict(compiled.model.named_parameters()), dict(eager.model.named_parameters()),
                               rtol=0, atol=1e-4)
    row = compiled.next_rows()[0].model_inputs()
    with torch.no_grad():
        logits = compiled.model(**row).logits
        compiled.model.compile_layers(False)
        assert torch.equal(logits, compiled.model(**row).logits)  # evaluation ran the layers eager


def test_compile_without_a_compiler_warns_and_trains_eager(processor, tmp_path, monkeypatch):
    """Where inductor cannot build kernels (no C++ compiler on a CPU), a compile stage warns and trains eager."""
    import mimolab.train.stage as stage_module

    monkeypatch.setattr(stage_module, "can_compile", lambda device: False)
    stage = Stage(name="s", lr={"llm": 1e-3}, shares=SHARES, steps=1, warmup_steps=1, row_tokens=256, rows_per_step=1)
    eager = make(processor, stage, tmp_path / "eager").train(progress=False)
    with pytest.warns(UserWarning, match="cannot build kernels"):
        trainer = make(processor, dataclasses.replace(stage, compile=True), tmp_path / "compile")
    assert trainer.model.language_model.compiled is None and trainer.model.visual.compiled is None
    assert trainer.train(progress=False)[0]["loss"] == eager[0]["loss"]
