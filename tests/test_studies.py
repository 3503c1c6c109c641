"""The studies: Welch's test by hand, verdicts that say 'not significant' when p >= 0.05, interference as
mixed minus single, and the study files (the GRPO studies at smoke: tests/test_study_grpo.py)."""

import math

import pytest

from mimolab.pipeline.studies import load_study
from mimolab.pipeline.study_grpo import interference
from mimolab.pipeline.study_results import (markdown, min_detectable_effect, seeds_needed, studies_summary, summarise,
                                            verdict, welch, write_study)


def test_welch_matches_the_formula():
    a, b = [0.1, 0.2, 0.3], [0.4, 0.5, 0.7]
    var = lambda x: sum((v - sum(x) / 3) ** 2 for v in x) / 2  # noqa: E731
    t = (sum(b) / 3 - sum(a) / 3) / math.sqrt(var(a) / 3 + var(b) / 3)
    got = welch(a, b)
    assert got["diff"] == pytest.approx(0.3333, abs=1e-3) and got["t"] == pytest.approx(t) and 0 < got["p"] < 0.05
    assert welch([0.5, 0.5], [0.5, 0.5])["p"] is None
    # the 95% CI by hand: diff ± t(0.975, Welch-Satterthwaite df) * s.e.
    va, vb = var(a) / 3, var(b) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert got["df"] == pytest.approx(df) and got["ci_low"] == pytest.approx(got["diff"] - half)
    assert got["ci_high"] == pytest.approx(got["diff"] + half) and got["ci_low"] > 0  # p < 0.05: the CI excludes 0


def test_paired_by_seed_matches_the_formula_and_sees_what_welch_misses():
    """Seeds that move both arms alike (a shared problem stream): the per-seed difference is steady, so the
    paired test finds it where Welch, taking the arms as independent, cannot."""
    from scipy import stats

    from mimolab.pipeline.study_results import min_detectable_effect_paired, paired

    a = {0: 0.30, 1: 0.50, 2: 0.40, 3: 0.60, 9: 0.9}  # seed 9 has no partner: left out
    b = {0: 0.36, 1: 0.58, 2: 0.45, 3: 0.67}
    d = [0.06, 0.08, 0.05, 0.07]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    got = paired(a, b)
    assert got["pairs"] == 4 and got["diff"] == pytest.approx(mean) and got["df"] == 3
    assert got["t"] == pytest.approx(mean / (sd / 2))
    half = stats.t.ppf(0.975, 3) * sd / 2
    assert got["ci_low"] == pytest.approx(mean - half) and got["ci_high"] == pytest.approx(mean + half)
    assert got["p"] < 0.01 < 0.05 < got["welch_p"]
    assert min_detectable_effect_paired(sd, 4) == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * sd / 2)
    assert paired({0: 0.1, 1: 0.2}, {0: 0.2, 1: 0.3})["p"] is None  # every seed the same difference: no spread
    runs = {arm: {s: [{"score/counting": v}] for s, v in vals.items()} for arm, vals in (("short", a), ("long", b))}
    (test,) = summarise(runs, ["counting"], [("short", "long")], test="paired")["tests"]
    assert test["test"] == "paired" and test["p"] == pytest.approx(got["p"]) and "paired t p" in verdict(test)


def test_minimum_detectable_effect_by_hand_and_the_seeds_it_asks_for():
    from scipy import stats

    # two arms, sd 0.05, 3 seeds each: s.e. sqrt(2 * 0.05**2 / 3), df 4
    se = math.sqrt(2 * 0.05**2 / 3)
    expected = (stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * se
    assert min_detectable_effect(0.05, 0.05, 3, 3) == pytest.approx(expected)
    assert min_detectable_effect(0.05, 0.05, 6, 6) < expected  # more seeds, smaller effects detectable
    k = seeds_needed(0.05, 0.10)
    assert min_detectable_effect(0.05, 0.05, k, k) <= 0.10 < min_detectable_effect(0.05, 0.05, k - 1, k - 1)
    assert seeds_needed(0.5, 0.10, most=10) is None  # too noisy for 10 seeds


def curves(values):
    return {seed: [{"step": 0, "rollouts": 0, "score/counting": 0.0}, {"step": 1, "rollouts": 8, "score/counting": v}]
            for seed, v in enumerate(values)}


def test_summary_says_when_an_effect_is_not_significant():
    runs = {"on_policy": curves([0.50, 0.60, 0.55]), "vanilla": curves([0.52, 0.58, 0.60])}
    result = {"profile": "cpu", **summarise(runs, ["counting"], [("on_policy", "vanilla")])}
    (row_a, _), (test,) = result["table"], result["tests"]
    assert row_a["mean"] == pytest.approx(0.55) and row_a["seeds"] == 3 and test["p"] > 0.05
    assert "not significant" in markdown("grpo_modes", result)
    assert test["mde"] > 0.10 and "underpowered: it could only detect" in markdown("grpo_modes", result)  # sd ~0.05, 3 seeds
    runs["vanilla"] = curves([0.60, 0.50, 0.55])  # the same mean, up to float rounding
    assert "the same to 3 decimals" in markdown("grpo_modes", {"profile": "cpu", **summarise(runs, ["counting"], [("on_policy", "vanilla")])})
    runs["vanilla"] = curves([0.90, 0.92, 0.91])
    assert ": significant" in markdown("grpo_modes", {"profile": "cpu", **summarise(runs, ["counting"], [("on_policy", "vanilla")])})


def test_interference_is_mixed_minus_single():
    spec = load_study("interference", "smoke")
    runs = {"short": curves([0.6, 0.7]), "long": curves([0.1, 0.1]), "mixed": curves([0.4, 0.5])}
    (row,) = [r for r in interference(runs, spec) if r["task"] == "counting"]
    assert row["single"] == "short" and row["diff"] == pytest.approx(-0.2)


def test_the_pipeline_report_summary_lists_each_comparison_and_what_is_missing(tmp_path):
    runs = {"on_policy": curves([0.50, 0.60, 0.55]), "vanilla": curves([0.90, 0.92, 0.91])}
    result = {"study": "grpo_modes", "profile": "cpu", **summarise(runs, ["counting"], [("on_policy", "vanilla")])}
    write_study("grpo_modes", result, runs, ["counting"], "rollouts", tmp_path)
    text = "\n".join(studies_summary(tmp_path))
    (row,) = [line for line in text.splitlines() if line.startswith("| grpo_modes |")]
    assert "| cpu | counting | vanilla vs on_policy | 0.91 | 0.55 | - | +0.360 | +" in row and ": significant" in row
    assert "Not run yet: `long_cot`" in text and "| chance |" in (tmp_path / "grpo_modes.md").read_text() and "`interference`" in text and "`grpo_modes` (" not in text


def test_study_files_load_typed_and_bad_ones_fail_naming_the_field(tmp_path):
    for name in ("long_cot", "grpo_modes", "interference"):
        for profile in ("smoke", "cpu", "gpu"):
            spec = load_study(name, profile)
            assert spec.name == name and len(spec.seeds) >= 2 and all(a in spec.arms for pair in spec.compare for a in pair)
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms: {a: {}, b: {}}\ncompare: [[a, c]]\neval_tasks: [counting]\nprofiles: {cpu: {seeds: [0], eval_n: 10}}\n")
    with pytest.raises(ValueError, match="compare"):
        load_study(bad, "cpu")
    bad.write_text("arms: {a: {}}\ncompare: []\neval_tasks: [countng]\nprofiles: {cpu: {seeds: [0], eval_n: 10}}\n")
    with pytest.raises(ValueError, match="countng"):
        load_study(bad, "cpu")
    bad.write_text("arms: {a: {}}\neval_task: [counting]\nprofiles: {cpu: {seeds: [0], eval_n: 10}}\n")
    with pytest.raises(ValueError, match="eval_task"):
        load_study(bad, "cpu")


def test_a_cached_curve_is_reused_only_with_the_settings_it_was_made_with(tmp_path):
    from mimolab.pipeline.studies import cached_curve, save_curve

    run = tmp_path / "vanilla-seed0"
    settings = {"grpo": {"lr": 2e-5, "tasks": (("grounding", 1.0),)}, "eval_n": 64}
    assert cached_curve(run, settings) is None  # nothing run yet
    run.mkdir()
    save_curve(run, settings, [{"step": 0, "score/grounding": 0.5}])
    assert cached_curve(run, dict(settings)) == [{"step": 0, "score/grounding": 0.5}]  # tuples read back as lists
    assert cached_curve(run, {**settings, "eval_n": 80}) is None and not run.exists()  # the study changed: run again
    run.mkdir()
    (run / "curve.json").write_text('[{"step": 0}]')  # cached before settings were recorded: reused
    assert cached_curve(run, settings) == [{"step": 0}]
