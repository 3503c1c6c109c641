"""GRPO: group advantages, loss aggregations, the on-policy ratio of exactly 1, the generator's
log-probs equal to the trainer's, vanilla updates that move the ratio and clip, LoRA with the
adapters-off reference, dynamic sampling."""

import dataclasses

import pytest
import torch

from mimolab import MiMoVL
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.rl.grpo import GRPOConfig, group_advantages, policy_loss
from mimolab.rl.trainer import GRPOTrainer
from reward_helpers import varied_reward  # a TRL-style reward: any callable with this signature plugs in


@pytest.fixture(scope="module")
def processor():
    return world_processor(world_tokenizer(n_per_task=3))


def trainer(processor, tmp_path, lora=False, **changes):
    torch.manual_seed(0)
    model = MiMoVL.from_preset("smoke")
    if lora:
        from mimolab.train.lora import add_lora
        add_lora(model, parts=("llm",), r=4)
    cfg = GRPOConfig(tasks=(("counting", 1.0), ("grounding", 1.0)), prompts_per_step=2, group_size=3,
                     max_new_tokens=12, lr=5e-3, temperature=1.0, **changes)
    return GRPOTrainer(model, processor, cfg, tmp_path, rewards=[varied_reward])


def test_a_step_records_where_its_time_went(processor, tmp_path):
    """The step's record splits its wall-clock time into rollouts, rewards and update: each part timed, together no
    more than the step took."""
    import time

    t = trainer(processor, tmp_path)
    start = time.perf_counter()
    record = t.step()
    took = time.perf_counter() - start
    parts = [record[f"seconds/{k}"] for k in ("rollout", "rewards", "update")]
    assert all(p > 0 for p in parts) and sum(parts) <= took
    assert record["seconds/rollout"] > record["seconds/rewards"]  # generating beats scoring a few short replies


def test_group_advantages():
    rewards = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3]])
    adv = group_advantages(rewards)
    torch.testing.assert_close(adv.mean(1), torch.zeros(2), atol=1e-6, rtol=0)
    assert adv[0].std(unbiased=False) == pytest.approx(1.0, abs=1e-4) and torch.equal(adv[1], torch.zeros(4))


def test_loss_aggregations_and_clipping():
    cfg = lambda agg: GRPOConfig(loss_agg=agg, max_new_tokens=4, clip_eps=0.2)  # noqa: E731
    logp = [torch.zeros(1), torch.zeros(3)]
    adv = torch.tensor([1.0, -1.0])
    # on-policy: ratio 1, per-token loss = -advantage
    assert policy_loss(logp, logp, adv, cfg("token_mean"))[0].item() == pytest.approx((-1 + 3) / 4)
    assert policy_loss(logp, logp, adv, cfg("seq_mean"))[0].item() == pytest.approx((-1 + 1) / 2)
    assert policy_loss(logp, logp, adv, cfg("constant"))[0].item() == pytest.approx((-1 + 3) / (2 * 4))
    old = [torch.full((1,), -1.0), torch.zeros(3)]  # first sequence: ratio e > 1 + eps, positive advantage
    loss, stats = policy_loss(logp, old, adv, cfg("token_mean"))
    assert loss.item() == pytest.approx((-1.2 + 3) / 4) and stats["clip_fraction"] == pytest.approx(0.25)


def test_on_policy_ratio_is_one_and_generator_logprobs_match_the_trainer(processor, tmp_path):
    from mimolab.rl.logprobs import completion_logprobs

    t = trainer(processor, tmp_path)
    groups = t.rollout(t.draw_prompts())
    rollouts = [r for g in groups for r in g]
    assert all(len(r.tokens) == len(r.logprobs) > 0 for r in rollouts)
    recomputed, _ = completion_logprobs(t.model.eval(), [r.training_sample(t.model.config) for r in rollouts], 1.0,
                                        t.cfg.row_tokens, suppress=t.suppress)  # the generator's mask: media never sampled
    for r, lp in zip(rollouts, recomputed):
        torch.testing.assert_close(lp, torch.tensor(r.logprobs), atol=1e-4, rtol=1e-4)
    record = t.step()
    assert record["first_update/ratio_max_dev"] < 1e-3 and record["first_update/clip_fraction"] == 0.0
    assert record["first_update/kl_ref"] == pytest.approx(0.0, abs=1e-6)  # the policy is still the reference


def test_rollout_prefills_each_prompt_once(processor, tmp_path):
    """A group's images go through the vision encoder once and its prompt through one prefill row;
    the group's samples then differ (test_generation checks they equal repeating the prompts first)."""
    t = trainer(processor, tmp_path)
    samples = t.draw_prompts()
    seen = {"patches": [], "rows": []}
    hooks = [t.model.visual.register_forward_pre_hook(lambda m, a: seen["patches"].append(a[0].shape[0])),
             t.model.language_model.embed_tokens.register_forward_pre_hook(lambda m, a: seen["rows"].append(len(a[0])))]
    try:
        groups = t.rollout(samples)
    finally:
        for h in hooks:
            h.remove()
    prompts = [r.prompt for r in (g[0] for g in groups)]
    assert seen["patches"] == [sum(p.pixel_values.shape[0] for p in prompts)]
    assert seen["rows"][0] == len(samples) and seen["rows"][1] == len(samples) * t.cfg.group_size
    assert all(len({tuple(r.tokens) for r in g}) > 1 for g in groups)


def test_bf16_rollouts_and_update_take_the_old_logprobs_from_the_update(processor, tmp_path):
    """Rollouts in bfloat16 and the update under bf16 autocast: the sampler's log-probs are within bf16 rounding
    of the update's, not equal to them, so the old log-probs are the update's own and the first ratio is
    exactly 1; the distance is logged. Another rollout dtype is refused by name."""
    t = trainer(processor, tmp_path, rollout_dtype="bfloat16", bf16=True)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    record = t.step()
    assert record["first_update/ratio_max_dev"] == 0.0 and record["first_update/clip_fraction"] == 0.0
    assert 1e-6 < record["sampler_logprob_max_dev"] < 0.05
    assert any(not torch.equal(p, before[n]) for n, p in t.model.named_parameters())  # the update still trains
    with pytest.raises(ValueError, match="rollout_dtype"):
        GRPOConfig(rollout_dtype="float16")


@pytest.mark.parametrize("row_factor", [1, 2], ids=["groups-split", "groups-whole"])
def test_completion_logprobs_packed_equal_each_sample_alone(processor, tmp_path, row_factor):
    """A group's prompt once and its completions after it, in unpadded rows, the head on the target positions
    only: log-probs and entropies equal those of one full forward per sample, also where a group is split
    across rows (rows as long as the longest rollout)."""
    from mimolab.data.packing import collate_packed
    from mimolab.rl.logprobs import completion_logprobs, pack_groups, shared_media_features

    t = trainer(processor, tmp_path)
    samples = [r.training_sample(t.model.config) for g in t.rollout(t.draw_prompts()) for r in g]
    model = t.model.eval()
    row_tokens = row_factor * max(map(len, samples))
    with torch.no_grad():
        rows = pack_groups(samples, shared_media_features(model, samples), row_tokens, ())
        prompts = sum(p < 0 for row in rows for p in row.prefix)  # segments that continue none
        assert len(rows) > 1 and (prompts > 2 if row_factor == 1 else prompts == 2)  # 2 prompts, split or whole
        lps, ents = completion_logprobs(model, samples, 0.8, row_tokens, with_entropy=True, suppress=t.suppress)
        untargeted = dataclasses.replace(samples[0], labels=[-100] * len(samples[0]))
        lp, _ = completion_logprobs(model, [untargeted, samples[0]], 0.8, row_tokens, suppress=t.suppress)
        assert lp[0].numel() == 0  # nothing to score, and the other sample as before
        torch.testing.assert_close(lp[1], lps[0], atol=1e-5, rtol=0)
        for s, lp, ent in zip(samples, lps, ents):
            inputs = {k: v for k, v in collate_packed([s], len(s), 0).model_inputs().items() if k != "labels"}
            logits = model(**inputs).logits[0].float()
            logits[:, list(t.suppress)] = float("-inf")
            full = torch.log_softmax(logits / 0.8, -1)
            labels = torch.tensor(s.labels)
            targets = (labels[1:] != -100).nonzero()[:, 0]
            torch.testing.assert_close(lp, full[targets].gather(-1, labels[targets + 1, None])[:, 0], atol=1e-5, rtol=0)
            want = -(full[targets].exp() * full[targets].clamp_min(-1e30)).sum(-1)
            torch.testing.assert_close(ent, want, atol=1e-5, rtol=0)


def test_a_groups_rows_share_one_vision_pass_with_the_gradient_of_separate_ones(processor, tmp_path):
    """The update runs the ViT and the prompt's tokens once per prompt, not once per rollout (a group's rows share
    their prompt), and every parameter's gradient, the ViT's included, equals that of one full forward per
    rollout."""
    from mimolab.data.packing import collate_packed
    from mimolab.rl.logprobs import completion_logprobs

    t = trainer(processor, tmp_path)
    groups = t.rollout(t.draw_prompts())
    samples = [r.training_sample(t.model.config) for g in groups for r in g]
    model = t.model.train()
    patches = []
    tokens = []
    hooks = [model.visual.register_forward_hook(lambda module, args, out: patches.append(args[0].shape[0])),
             model.language_model.layers[0].register_forward_hook(lambda m, args, out: tokens.append(args[0].shape[1]))]
    lps, _ = completion_logprobs(model, samples, 0.8, 2 * max(map(len, samples)))
    for hook in hooks:
        hook.remove()
    assert patches == [sum(g[0].prompt.pixel_values.shape[0] for g in groups)]  # one pass, each prompt once
    assert sum(tokens) == sum(len(g[0].prompt) + sum(len(r.tokens) for r in g) for g in groups)
    sum(lp.sum() for lp in lps).backward()
    shared = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for s in samples:  # each rollout alone, its own vision pass
        inputs = {k: v for k, v in collate_packed([s], len(s), 0).model_inputs().items() if k != "labels"}
        logp = torch.log_softmax(model(**inputs).logits[0].float() / 0.8, -1)
        labels = torch.tensor(s.labels)
        targets = (labels[1:] != -100).nonzero()[:, 0]
        logp[targets].gather(-1, labels[targets + 1, None]).sum().backward()
    vision = [n for n in shared if n.startswith("visual.")]
    assert vision and all(shared[n].abs().sum() > 0 for n in vision)
    for n, p in model.named_parameters():
        torch.testing.assert_close(shared[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_vanilla_updates_move_the_ratio_and_kl(processor, tmp_path):
    t = trainer(processor, tmp_path, updates_per_batch=4, clip_eps=0.05, kl_coef=0.1)
    records = [t.step() for _ in range(2)]
    assert records[0]["first_update/ratio_max_dev"] < 1e-3  # the first update of a batch is on-policy...
    assert records[0]["ratio_max_dev"] > 1e-3  # ... the last one is not
    assert records[1]["first_update/kl_ref"] > 0  # the policy left the reference


def test_kl_every_skips_the_reference_forward_and_changes_nothing_else(processor, tmp_path):
    """At kl_coef 0 the reference policy only measures the KL to the start: measured every second step, or never
    (no reference copy kept), the weights after three steps equal those of a run that measured it every step."""
    runs = {}
    for every in (1, 2, 0):
        t = trainer(processor, tmp_path / str(every), kl_every=every)
        assert (t.reference is None) == (every == 0)
        runs[every] = ([("kl_ref" in t.step()) for _ in range(3)], t.model.state_dict())
    assert runs[1][0] == [True, True, True] and runs[2][0] == [False, True, False] and runs[0][0] == [False] * 3
    for every in (2, 0):
        assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[every][1].items())


def test_lora_grpo_keeps_base_weights_and_uses_adapters_off_as_reference(processor, tmp_path):
    t = trainer(processor, tmp_path, lora=True)
    assert t.reference is None  # no second copy of the model
    base = {n: p.detach().clone() for n, p in t.model.named_parameters() if ".lora_" not in n}
    records = [t.step() for _ in range(2)]
    assert records[0]["first_update/kl_ref"] == pytest.approx(0.0, abs=1e-6)  # lora_B starts at 0: adapters are a no-op
    assert records[1]["first_update/kl_ref"] > 0
    assert all(torch.equal(p, base[n]) for n, p in t.model.named_parameters() if ".lora_" not in n)


def test_dynamic_sampling_drops_groups_without_spread(processor, tmp_path):
    t = trainer(processor, tmp_path, min_group_std=2.0)  # rewards are in [0, 1]: no group has spread 2
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    record = t.step()
    assert record["groups_kept"] == 0 and "loss" not in record
    assert all(torch.equal(p, before[n]) for n, p in t.model.named_parameters())


def test_rl_files_load_for_every_profile_and_reject_unknown_keys(tmp_path):
    from mimolab.rl.grpo import load_grpo_config
    from mimolab.settings import EXPERIMENTS

    for path in (EXPERIMENTS / "rl").glob("grpo*.yaml"):  # the GRPO runs (reward_models.yaml has its own keys)
        for profile in ("smoke", "cpu", "gpu", "mimo-vl-7b"):
            cfg = load_grpo_config(path, profile)
            assert cfg.updates_per_batch == 1 and cfg.kl_coef == 0.0  # on-policy, no KL: MiMo-VL's choice
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: {counting: 1.0}\nepochs: 3\nprofiles: {cpu: {}}\n")
    with pytest.raises(ValueError, match="epochs"):
        load_grpo_config(bad, "cpu")


def test_a_resumed_grpo_run_continues_exactly(processor, tmp_path):
    straight = trainer(processor, tmp_path / "a").train(steps=3, progress=False)
    first = trainer(processor, tmp_path / "b")
    first.train(steps=2, progress=False, checkpoint_every=2)
    again = trainer(processor, tmp_path / "b")  # a new process: fresh model, then the checkpoint
    assert again.resume() and again.step_count == 2
    tail = again.train(steps=3, progress=False)
    assert [r["step"] for r in tail] == [3]
    for key in ("reward", "loss", "response_length"):
        assert tail[0][key] == pytest.approx(straight[2][key], abs=1e-5), key


def share_of_threes(completions, **kwargs):
    """A reward a smoke model can surely learn to raise: how much of the completion is the character '3'."""
    return [min(1.0, 5 * c.count("3") / max(1, len(c))) for c in completions]


@pytest.mark.slow
def test_grpo_raises_its_reward_on_a_task_it_can_learn(processor, tmp_path):
    torch.manual_seed(0)
    cfg = GRPOConfig(tasks=(("counting", 1.0),), prompts_per_step=4, group_size=4, max_new_tokens=8, lr=3e-3,
                     temperature=1.0, steps=40)
    history = GRPOTrainer(MiMoVL.from_preset("smoke"), processor, cfg, tmp_path, rewards=[share_of_threes]).train(progress=False)
    first, last = (sum(r["reward"] for r in part) / len(part) for part in (history[:10], history[-10:]))
    assert last > 1.5 * first, (first, last)


def test_morl_with_lora_trains_adapters_only_merges_them_and_resumes_exactly(processor, tmp_path):
    """run_morl with lora_rank: the vision tower stays bit-identical, the merged final is a plain model
    whose language weights moved, and a run stopped after step 1 then resumed ends bit-identical to an
    uninterrupted one (the adapters and their optimizer state come back from the checkpoint)."""
    from safetensors.torch import load_file

    from mimolab.pipeline import run_morl
    from mimolab.train.checkpoints import save_final

    torch.manual_seed(0)
    start = save_final(MiMoVL.from_preset("smoke"), processor, tmp_path / "start")
    run = lambda name, steps: run_morl("smoke", start, tmp_path / name, tracking="disabled", progress=False,  # noqa: E731
                                       eval_n=2, rewards=[varied_reward], tasks={"counting": 1.0, "grounding": 1.0},
                                       steps=steps, checkpoint_every=1, lora_rank=4, lora_alpha=8, lr=1e-2)
    run("whole", 2)
    run("stopped", 1)
    (tmp_path / "stopped" / "morl.json").unlink()  # as if the job had died after step 1's checkpoint
    result = run("stopped", 2)
    assert [c.task for c in result.changes] == ["counting", "grounding"]
    assert not (tmp_path / "whole" / "final" / "adapter").exists()
    weights = lambda d: load_file(str(d / "model.safetensors"))  # noqa: E731
    base, whole, resumed = weights(start), weights(tmp_path / "whole" / "final"), weights(tmp_path / "stopped" / "final")
    assert whole.keys() == base.keys()
    assert all(torch.equal(whole[k], base[k]) for k in base if "visual" in k)
    assert any(not torch.equal(whole[k], base[k]) for k in base if "self_attn.q_proj" in k)
    assert all(torch.equal(whole[k], resumed[k]) for k in base)


@pytest.mark.parametrize("profile", ["cpu"])
def test_morl_samples_at_the_difficulties_the_last_stages_trained_and_scored(profile):
    """The per-task difficulty is written in three files (stages 3 and 4, GRPO): MORL's before-evaluation
    is only stage 4's evaluation, and its prompts only the trained distribution, while the three agree."""
    from mimolab.rl.grpo import load_grpo_config
    from mimolab.train.stage import load_stage

    grpo = load_grpo_config("grpo_on_policy", profile).difficulty
    assert load_stage("stage3_multimodal", profile).difficulty == grpo
    assert load_stage("stage4_long_context", profile).difficulty == grpo
