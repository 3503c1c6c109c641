"""Studies 2 and 3 (grpo_modes, interference): arms that differ only in what the spec says, the
training statistics and claims by hand, and at smoke a study run seed by seed whose last call only
aggregates, with a killed run redone from its start so no step counts twice."""

import json
import math

import pytest
import torch

from mimolab.eval.harness import chance_levels
from mimolab.pipeline.studies import load_study, pick_seeds
from mimolab.pipeline.study_grpo import arm_config, check_arms, grpo_claims, interference, run_grpo_study, window_means
from mimolab.pipeline.study_results import claim_verdict, headroom, markdown, mean_ci, summarise


@pytest.mark.parametrize("name", ["grpo_modes", "interference"])
@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_arms_differ_only_in_what_the_study_compares(name, profile):
    spec = load_study(name, profile)
    check_arms(spec, profile)
    configs = {arm: arm_config(spec, profile, arm, seed=0).__dict__ for arm in spec.arms}
    compared = {"grpo_modes": {"updates_per_batch"}, "interference": {"tasks"}}[name]
    first = next(iter(configs.values()))
    for arm, cfg in configs.items():
        assert {k for k in cfg if cfg[k] != first[k]} <= compared, arm
        # the same rollouts: prompts per step x group size x steps
        assert (cfg["prompts_per_step"], cfg["group_size"], cfg["steps"]) == (first["prompts_per_step"], first["group_size"], spec.steps)
    assert len({repr(sorted(c.items(), key=str)) for c in configs.values()}) == len(configs)  # and they do differ
    if name == "grpo_modes":  # held-out score at >= 8 points after the start, on the tasks trained
        assert spec.steps // spec.eval_every >= 8 or profile == "smoke"
        assert set(spec.eval_tasks) == {t for t, _ in first["tasks"]} and "text_reasoning" in spec.eval_tasks


def test_an_arm_may_not_change_anything_else(tmp_path):
    spec = load_study("grpo_modes", "smoke")
    bad = type(spec)(**{**vars(spec), "arms": {"on_policy": {"updates_per_batch": 1}, "vanilla": {"updates_per_batch": 4, "lr": 1.0}}})
    with pytest.raises(ValueError, match="'vanilla' sets \\['lr'\\]"):
        check_arms(bad, "smoke")
    typo = type(spec)(**{**vars(spec), "grpo": {"learning_rate": 1e-5}})
    with pytest.raises(ValueError, match="learning_rate"):
        check_arms(typo, "smoke")
    with pytest.raises(ValueError, match="subset"):
        pick_seeds(spec, [7])
    assert pick_seeds(spec, [1, 0]) == spec.seeds  # in the spec's order: a full list is all seeds


def test_window_means_skip_steps_without_an_update():
    records = [{"step": 1, "reward/chart": 0.5, "response_length/chart": 2.0, "entropy": None, "kl_ref": None, "loss": 3.0},
               {"step": 2, "reward/chart": 0.0, "response_length/chart": 4.0, "entropy": 0.2, "kl_ref": 0.01,
                "clip_fraction": 0.1, "reward/grounding": 1.0}]
    got = window_means(records)
    assert got == {"train/reward/chart": 0.25, "train/response_length/chart": 3.0, "train/entropy": 0.2,
                   "train/kl_ref": 0.01, "train/clip_fraction": 0.1, "train/reward/grounding": 1.0}


def curve(points, task="chart", length=None):
    """A curve with held-out scores ``points`` at steps 0, 1, ...; the training length at the end."""
    out = [{"step": i, "rollouts": 8 * i, f"score/{task}": v} for i, v in enumerate(points)]
    if length is not None:
        out[-1][f"train/response_length/{task}"] = length
    return out


def test_grpo_modes_claims_by_hand():
    # vanilla: fast early then flat; on-policy: slow but still rising at the end
    runs = {"vanilla": {s: curve([0.5, 0.62 + d, 0.64 + d, 0.64 + d, 0.63 + d]) for s, d in enumerate([0.0, 0.01, -0.01])},
            "on_policy": {s: curve([0.5, 0.52 + d, 0.56 + d, 0.62 + d, 0.70 + d]) for s, d in enumerate([0.0, 0.02, -0.01])}}
    result = {"chance": {"chart": 0.2}, **summarise(runs, ["chart"], [("on_policy", "vanilla")])}
    claims = {c["claim"].split(" (")[0]: c for c in grpo_claims("grpo_modes", result, runs)}
    assert claims["on-policy ends higher than vanilla"]["verdict"] == "agrees"  # vanilla - on_policy = -0.07
    assert claims["on-policy ends higher than vanilla"]["value"] == pytest.approx(0.63 - 0.70 + (0.0 - 0.01 / 3))
    early = claims["vanilla gains faster early"]
    assert early["value"] == pytest.approx(0.12 - (0.02 + 0.01 / 3)) and early["verdict"] == "agrees"
    # second half: points 2 -> 4; vanilla gains -0.01 each seed (no spread: no CI, cannot tell), on-policy +0.14
    assert claims["vanilla flattens"]["value"] == pytest.approx(-0.01) and claims["vanilla flattens"]["verdict"] == "cannot tell"
    rising = claims["on-policy still rising"]
    assert rising["value"] == pytest.approx(0.14) and rising["verdict"] == "cannot tell"  # no spread either
    runs["on_policy"][2] = curve([0.5, 0.5, 0.56, 0.62, 0.72])  # now a spread: gains 0.14, 0.14, 0.16
    rising = next(c for c in grpo_claims("grpo_modes", result, runs) if c["claim"].startswith("on-policy still"))
    ci = mean_ci([0.14, 0.14, 0.16])
    assert rising["ci"] == pytest.approx([ci["ci_low"], ci["ci_high"]]) and rising["verdict"] == "agrees"


def test_claim_verdicts_and_mean_ci_by_hand():
    from scipy import stats

    values = [0.1, 0.2, 0.3]
    half = stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert mean_ci(values) == pytest.approx({"diff": 0.2, "ci_low": 0.2 - half, "ci_high": 0.2 + half})
    assert claim_verdict(0.01, 0.2, agrees_above=0.0) == "agrees"
    assert claim_verdict(-0.01, 0.2, agrees_above=0.0, disagrees_below=0.0) == "cannot tell"
    assert claim_verdict(-0.3, -0.01, agrees_above=0.0, disagrees_below=0.0) == "disagrees"
    assert claim_verdict(None, None, agrees_above=0.0) == "cannot tell"


def test_interference_scores_and_lengths_are_mixed_minus_single():
    spec = load_study("interference", "smoke")
    (long_task,) = spec.arms["long"]["tasks"]
    runs = {"short": {s: curve([0.5, v], "counting") for s, v in enumerate([0.6, 0.7, 0.65])},
            "long": {s: curve([0.5, 0.5], long_task, length=v) for s, v in enumerate([60.0, 70.0, 65.0])},
            "mixed": {s: curve([0.5, v], "counting") + curve([0.5, 0.5], long_task, length=w)[1:]
                      for s, (v, w) in enumerate([(0.4, 40.0), (0.5, 50.0), (0.45, 45.0)])}}
    for c in runs["mixed"].values():  # one record per measurement: merge the two tasks' last points
        c[1].update(c.pop())
    rows = interference(runs, spec)
    (score,) = [r for r in rows if r["task"] == "counting" and r["what"] == "score"]
    (length,) = [r for r in rows if r["task"] == long_task and r["what"] == "response length"]
    assert score["single"] == "short" and score["diff"] == pytest.approx(-0.2) and score["ci_high"] < 0
    assert length["single"] == "long" and length["diff"] == pytest.approx(-20.0)
    result = {"profile": "cpu", "chance": {}, "tests": [], "table": [], "interference": rows}
    claims = grpo_claims("interference", result, runs)
    assert {c["verdict"] for c in claims if c["task"] == "counting"} == {"agrees"}
    assert any(c["claim"].startswith("mixing shortens") and c["verdict"] == "agrees" for c in claims)
    assert "mixing costs counting" in markdown("interference", {**result, "claims": claims})


def test_headroom_records_start_chance_and_each_arm_above_chance():
    runs = {"a": {0: curve([0.5, 0.6]), 1: curve([0.5, 0.4])}, "b": {0: curve([0.5, 0.25]), 1: curve([0.5, 0.25])}}
    (row,) = headroom(runs, ["chart"], {"chart": 0.2})
    assert row["start"] == 0.5 and row["chance"] == 0.2 and row["a - chance"] == pytest.approx(0.3)
    assert row["b - chance"] == pytest.approx(0.05) and row["every arm >= chance + margin"] is False


@pytest.mark.slow
def test_grpo_study_runs_seed_by_seed_and_a_killed_run_counts_no_step_twice(tmp_path, monkeypatch):
    from mimolab import MiMoVL
    from mimolab.data.pipeline import world_processor, world_tokenizer
    from mimolab.rl.trainer import GRPOTrainer
    from mimolab.train.checkpoints import save_final
    from mimolab.train.tracking import read_metrics

    torch.manual_seed(0)
    start = save_final(MiMoVL.from_preset("smoke"), world_processor(world_tokenizer(n_per_task=3)), tmp_path / "start")
    kw = {"out": tmp_path / "results", "runs_dir": tmp_path / "runs", "tracking": "disabled", "progress": False}
    step, calls = GRPOTrainer.step, []

    def killed_at_step_2(self):
        calls.append(self.step_count)
        if self.step_count == 1 and len(calls) == 2:  # the first run ever: dies in its second step
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(GRPOTrainer, "step", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_grpo_study("grpo_modes", "smoke", start, seeds=[0], **kw)
    assert not (tmp_path / "runs" / "on_policy-seed0" / "curve.json").exists()
    partial = run_grpo_study("grpo_modes", "smoke", start, seeds=[0], **kw)  # redone from its start
    assert "table" not in partial and not (tmp_path / "results").exists()  # a subset writes no results
    assert [r["step"] for r in read_metrics(tmp_path / "runs" / "on_policy-seed0")] == [1, 2]
    metrics = (tmp_path / "runs" / "on_policy-seed0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics if '"reward"' in line] == [1, 2]  # logged once each
    run_grpo_study("grpo_modes", "smoke", start, seeds=[1], **kw)
    done = len(calls)
    result = run_grpo_study("grpo_modes", "smoke", start, **kw)  # every seed cached: only aggregates
    assert len(calls) == done
    saved = json.loads((tmp_path / "results" / "grpo_modes.json").read_text())
    assert saved["tests"] == result["tests"] and saved["start"] == f"{tmp_path.name}/start"  # no machine path
    for arm in ("on_policy", "vanilla"):  # the same rollouts, scores at steps 0, 1, 2, training statistics
        for c in saved["runs"][arm].values():
            assert [r["step"] for r in c] == [0, 1, 2] and c[-1]["rollouts"] == saved["runs"]["on_policy"]["0"][-1]["rollouts"]
            assert c[0] == partial["runs"]["on_policy"][0][0]  # the same start, scored once per run alike
            assert any(k.startswith("train/reward/") for k in c[-1])
    spec = load_study("grpo_modes", "smoke")
    assert [r["task"] for r in saved["headroom"]] == list(spec.eval_tasks) and saved["claims"]
    # chance beside the scores: that of the very held-out samples the curves were measured on
    assert saved["chance"]["grounding"] == pytest.approx(chance_levels(["grounding"], 2, difficulty=0.3)["grounding"])
    assert (tmp_path / "results" / "grpo_modes_training.png").stat().st_size
    text = (tmp_path / "results" / "grpo_modes.md").read_text()
    assert "Headroom" in text and "claims" in text and "grpo_modes_training.png" in text
