"""Study 1 (long CoT vs the answer alone): the short reply is the same problem and image with only the
reply changed, in the no-think format the model is scored in; the arms' stages differ only in that;
the claims table follows the CIs; and the study runs at smoke by seed subsets, caching each curve, so
a rerun neither retrains nor counts a seed twice."""

import dataclasses
import json

import pytest
import yaml

from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.data.sources import world_source
from mimolab.data.world.reasoning import EMPTY_THINK, with_reply
from mimolab.pipeline.studies import load_study
from mimolab.pipeline.study_long_cot import arm_stage_overrides, check_spec, long_cot_claims, run_long_cot_study
from mimolab.train.stage import load_stage


@pytest.mark.parametrize("task", ["visual_math", "text_reasoning"])
def test_short_reply_is_the_same_problem_with_the_answer_alone(task):
    long, short = world_source(task, seed=3, difficulty=0.2)(0), world_source(task, seed=3, difficulty=0.2,
                                                                              reasoning_reply="short")(0)
    for _ in range(4):
        a, b = next(long), next(short)
        assert a.answer == b.answer and a.meta == b.meta
        assert [m for m in a.messages if m["role"] == "user"] == [m for m in b.messages if m["role"] == "user"]
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
        assert a.reply.startswith("<think>\n") and len(a.meta["steps"]) >= 2 and a.meta["steps"][0] in a.reply
        assert b.reply == EMPTY_THINK + a.meta["short_reply"] and a.reply.endswith(a.meta["short_reply"])
    caption = next(world_source("caption", reasoning_reply="short")(0))
    assert caption.messages == next(world_source("caption")(0)).messages  # other tasks are untouched
    with pytest.raises(ValueError, match="medium"):
        with_reply(caption, "medium")


def test_short_reply_trains_exactly_what_no_think_mode_prompts():
    """The training text of a short reply starts with the no-think generation prompt, token for token,
    so the short arm is trained on the format it is scored in."""
    processor = world_processor(world_tokenizer())
    sample = next(world_source("text_reasoning", difficulty=0.2, reasoning_reply="short")(0))
    user = [m for m in sample.messages if m["role"] == "user"]
    full = processor.tokenizer(processor.apply_chat_template(sample.messages, add_generation_prompt=False))["input_ids"]
    prompt = processor.tokenizer(processor.apply_chat_template(user, enable_thinking=False))["input_ids"]
    thinking = processor.tokenizer(processor.apply_chat_template(user))["input_ids"]
    assert full[:len(prompt)] == prompt and prompt[:len(thinking)] == thinking and len(prompt) > len(thinking)


def test_the_arms_stages_differ_only_in_the_reply():
    for profile in ("smoke", "cpu", "gpu"):
        spec = load_study("long_cot", profile)
        check_spec(spec)
        for name in ("stage3_multimodal", "stage4_long_context"):
            long = load_stage(name, profile, **arm_stage_overrides(spec, profile, "long_cot", name, 1))
            short = load_stage(name, profile, **arm_stage_overrides(spec, profile, "short_cot", name, 1))
            assert (long.reasoning_reply, short.reasoning_reply) == ("long", "short")
            assert dataclasses.replace(short, reasoning_reply="long") == long  # same seed, data, tokens per step
    with pytest.raises(ValueError, match="reasoning_reply"):
        load_stage("stage3_multimodal", "smoke", reasoning_reply="medium")


def test_arms_may_not_change_anything_else(tmp_path):
    bad = tmp_path / "long_cot.yaml"
    bad.write_text("arms: {a: {}, b: {lr: 0.1}}\ncompare: [[a, b]]\neval_tasks: [counting]\n"
                   "profiles: {cpu: {seeds: [0], eval_n: 10, stage3_steps: 4, stage3_evals: 2, stage4_steps: 1}}\n")
    with pytest.raises(ValueError, match="lr"):
        check_spec(load_study(bad, "cpu"))


def test_claims_follow_the_confidence_intervals():
    def test(task, low, high):
        return {"task": task, "baseline": "short_cot", "arm": "long_cot", "diff": (low + high) / 2, "ci_low": low,
                "ci_high": high}

    result = {"chance": {"visual_math": 0.2}, "tests": [test("visual_math", 0.02, 0.2), test("counting", -0.08, 0.04),
                                                       test("chart", -0.3, -0.15)]}
    curve = lambda before, after: [{"score/visual_math": before}, {"score/visual_math": after}]  # noqa: E731
    runs = {"long_cot": {0: curve(0.3, 0.4), 1: curve(0.3, 0.5), 2: curve(0.35, 0.5)}}
    said = {(c["task"], c["claim"].split()[0]): c for c in long_cot_claims(result, runs)}
    assert said["visual_math", "long"]["verdict"] == "agrees"
    assert said["counting", "perception"]["verdict"] == "agrees"  # within the 0.10 margin
    assert said["chart", "perception"]["verdict"] == "disagrees"
    still = said["visual_math", "still"]  # gains 0.1, 0.2, 0.15: mean 0.15 with a t interval above 0
    assert still["diff"] == pytest.approx(0.15) and still["ci"][0] > 0 and still["verdict"] == "agrees"
    # a last point scored on more samples is compared on the earlier points' samples (its score@n)
    for seed, curve in runs["long_cot"].items():
        curve[-1]["score@30/visual_math"] = curve[0]["score/visual_math"] - 0.2 - 0.02 * seed
    still = {(c["task"], c["claim"].split()[0]): c for c in long_cot_claims(result, runs, 30)}["visual_math", "still"]
    assert still["diff"] == pytest.approx(-0.22) and still["verdict"] == "disagrees"


@pytest.mark.slow
def test_long_cot_study_at_smoke_by_seed_subsets_without_double_counting(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMOLAB_RUNS", str(tmp_path / "runs"))
    runs_dir, out = tmp_path / "runs" / "smoke" / "studies" / "long_cot", tmp_path / "results"
    spec = load_study("long_cot", "smoke")
    partial = run_long_cot_study("smoke", out=out, tracking="disabled", progress=False, seeds=(0,))
    assert not (out / "long_cot.json").exists() and set(partial["runs"]["long_cot"]) == {0}
    first = (runs_dir / "long_cot-seed0" / "curve.json").read_text()
    result = run_long_cot_study("smoke", out=out, tracking="disabled", progress=False)
    again = run_long_cot_study("smoke", out=out, tracking="disabled", progress=False)
    assert (runs_dir / "long_cot-seed0" / "curve.json").read_text() == first  # reused, not re-measured
    assert again["table"] == result["table"] and all(r["seeds"] == len(spec.seeds) for r in result["table"])
    for arm in spec.arms:
        for seed in spec.seeds:
            metrics = (runs_dir / f"{arm}-seed{seed}" / "stage3_multimodal" / "metrics.jsonl").read_text().splitlines()
            assert sum("loss" in json.loads(line) for line in metrics) == spec.stage3_steps  # trained once
    saved = json.loads((out / "long_cot.json").read_text())
    long, short = saved["runs"]["long_cot"]["1"], saved["runs"]["short_cot"]["1"]
    assert len(long) == spec.stage3_evals + 2 and [r["tokens"] for r in long] == [r["tokens"] for r in short]
    assert all(b["samples/visual_math"] >= a["samples/visual_math"] for a, b in zip(long[1:], short[1:]))
    assert all(r["length/visual_math"] > 0 for r in long + short)  # every point records its reply length
    # the last point, scored on more samples, also holds its score on the earlier points' samples (a prefix)
    assert all(0 <= r[f"score@{spec.eval_n}/{t}"] <= 1 for r in (long[-1], short[-1]) for t in spec.eval_tasks)
    stages = [yaml.safe_load((runs_dir / f"{arm}-seed1" / "stage3_multimodal" / "stage.yaml").read_text())
              for arm in ("long_cot", "short_cot")]
    assert {k for k in stages[0] if stages[0][k] != stages[1][k]} == {"reasoning_reply"}
    assert {row["task"] for row in saved["headroom"]} == set(spec.eval_tasks)
    assert all("start, think" in row and "start, no_think" in row for row in saved["headroom"])
    assert "Reply length and problems seen" in (out / "long_cot.md").read_text()


def test_the_stage_option_reaches_the_training_stream():
    """data_mixture (what run_stage builds from a Stage) trains the short arm on the answer alone: the same
    first problems, fewer target tokens, none of the chain's lines."""
    from mimolab.config import MiMoVLConfig
    from mimolab.data.files import data_mixture

    processor, config = world_processor(world_tokenizer()), MiMoVLConfig.from_name("smoke")
    streams = {reply: iter(data_mixture({"text_reasoning": 1.0}, {}, processor, config, max_length=512, difficulty=0.2,
                                        reasoning_reply=reply)) for reply in ("long", "short")}
    for index in range(3):
        long, short = next(streams["long"]), next(streams["short"])
        targets = {k: processor.tokenizer.decode([t for t in s.labels if t != -100]) for k, s in (("long", long),
                                                                                                ("short", short))}
        sample = next(world_source("text_reasoning", difficulty=0.2)(index))
        assert sample.meta["steps"][0] in targets["long"] and sample.meta["steps"][0] not in targets["short"]
        assert targets["short"].startswith(EMPTY_THINK) and sample.meta["short_reply"] in targets["short"]
