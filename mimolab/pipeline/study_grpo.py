"""Studies 2 and 3 (notebooks 10-11): GRPO runs from one start checkpoint, one per arm and seed, with
held-out scores along the way; ``grpo_modes`` compares on-policy with vanilla GRPO, ``interference``
RL on short-answer tasks, a long-CoT task and their mixture.

Every arm runs the rl file ``grpo_on_policy`` at the profile, then the study's shared ``grpo``
settings, then the arm's own overrides: the arms differ only in what the spec says. Each eval record
carries, beside the held-out scores, the training statistics averaged over the steps since the last
one (reward and response length per task, entropy, KL to the start, clip fraction), so the curves
and the training figure come from the same cached file. Each arm x seed curve is cached as
``<runs>/<arm>-seed<seed>/curve.json`` (written atomically once the run ends), so seeds can run in
separate processes (``seeds=``) and a last call with every seed only aggregates; a run killed
before its end leaves no curve and is redone from its start, so no step counts twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tqdm.auto import tqdm

from mimolab.eval.harness import chance_levels, evaluate
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.stages import default_run_dir
from mimolab.pipeline.studies import StudySpec, cached_curve, load_study, pick_seeds, save_curve, start_checkpoint
from mimolab.pipeline.study_results import (Runs, claim_verdict, final_scores, headroom, mean_ci, summarise,
                                            training_figure, welch, write_study)
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import GRPOConfig, load_grpo_config
from mimolab.rl.trainer import GRPOTrainer
from mimolab.settings import RESULTS_DIR, relative_to_runs
from mimolab.train.tracking import Tracker

ARM_KEYS = {"grpo_modes": ("updates_per_batch",), "interference": ("tasks",)}  # what an arm may change
TRAIN_KEYS = ("entropy", "kl_ref", "clip_fraction")  # logged per step by GRPOTrainer.step (kl_ref at any kl_coef)


def arm_config(spec: StudySpec, profile: str, arm: str, seed: int) -> GRPOConfig:
    """The arm's GRPO settings: the rl file at ``profile``, the study's ``grpo``, then the arm's overrides."""
    overrides = {**spec.grpo, **spec.arms[arm]}
    if isinstance(overrides.get("tasks"), dict):
        overrides["tasks"] = tuple((t, float(w)) for t, w in overrides["tasks"].items())
    return load_grpo_config("grpo_on_policy", profile, seed=seed, steps=spec.steps, **overrides)


def window_means(records: list[dict]) -> dict[str, float]:
    """The mean of each training statistic over ``records`` (the steps since the last measurement),
    over the steps that logged it (a step whose groups all lacked a reward spread made no update)."""
    keys = {k for r in records for k in r if k.startswith(("reward/", "response_length/")) or k in TRAIN_KEYS}
    out = {}
    for key in sorted(keys):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            out[f"train/{key}"] = sum(values) / len(values)
    return out


def grpo_curve(start: Path, run_dir: Path, profile: str, arm: str, seed: int, spec: StudySpec,
               tracking: str | None, group: str) -> list[dict]:
    """One GRPO run from ``start`` with the arm's settings; held-out scores every ``eval_every`` steps.
    Cached in ``run_dir/curve.json``; a run without one starts over (its partial logs removed)."""
    cfg = arm_config(spec, profile, arm, seed)
    settings = {"grpo": cfg.__dict__, "start": relative_to_runs(start), "steps": spec.steps,
                "eval_every": spec.eval_every, "eval_n": spec.eval_n, "eval_tasks": spec.eval_tasks}
    cached = cached_curve(run_dir, settings)
    if cached is not None:
        return cached
    if run_dir.exists():  # a run killed before its end: its metrics would repeat steps
        shutil.rmtree(run_dir)
    model, processor = MiMoVL.from_pretrained(start), MiMoVLProcessor.from_pretrained(start)
    curve, window, rollouts = [], [], 0

    def measure(step: int) -> None:
        rows = evaluate(model, processor, list(spec.eval_tasks), n=spec.eval_n, seed=0, difficulty=cfg.difficulty,
                        progress=False)
        curve.append({"step": step, "rollouts": rollouts, **{f"score/{r.task}": r.score for r in rows},
                      **window_means(window)})
        window.clear()

    with Tracker(run_dir, {**cfg.__dict__, "seed": seed}, mode=tracking, name=run_dir.name, group=group) as tracker:
        trainer = GRPOTrainer(model, processor, cfg, run_dir, tracker=tracker)
        try:
            measure(0)
            for step in range(1, spec.steps + 1):
                window.append(trainer.step())
                rollouts += cfg.prompts_per_step * cfg.group_size
                if step % spec.eval_every == 0 or step == spec.steps:
                    measure(step)
                    tracker.log({f"eval/{k[6:]}": v for k, v in curve[-1].items() if k.startswith("score/")}, step=step)
        finally:
            trainer.close()
    save_curve(run_dir, settings, curve)
    return curve


def check_spec(spec: StudySpec) -> None:
    """Settings that give a curve: steps >= eval_every >= 1 (the study files ask >= 8 points of it), and
    interference's mixed arm."""
    if spec.steps < 1 or not 1 <= spec.eval_every <= spec.steps:
        raise ValueError(f"study {spec.name!r}: needs steps >= eval_every >= 1 (got {spec.steps}, {spec.eval_every})")
    if spec.name == "interference" and "mixed" not in spec.arms:
        raise ValueError("study 'interference': needs an arm named 'mixed' (interference = mixed - single)")


def check_arms(spec: StudySpec, profile: str) -> None:
    """The arms differ only in what the study compares (``ARM_KEYS``): the same prompts per step, group
    size, steps and every other setting, so the same rollouts; and every arm's settings load (a bad key
    or value fails before any run, naming it)."""
    allowed = ARM_KEYS.get(spec.name, ())
    for arm, overrides in spec.arms.items():
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ValueError(f"study {spec.name!r}: arm {arm!r} sets {unknown}; an arm may set only {list(allowed)}")
        arm_config(spec, profile, arm, 0)


def run_grpo_study(name: str, profile: str, start: str | Path | None = None, *, out: Path = RESULTS_DIR,
                   runs_dir: Path | None = None, tracking: str | None = None, progress: bool = True,
                   seeds=None) -> dict:
    """``grpo_modes`` or ``interference``: every arm x seed (or the ``seeds`` given) from the same start
    checkpoint, the same rollouts per arm. With every seed: the result (headroom, per-arm curves, Welch
    tests with CI and MDE, the claims against the report), written to ``out``; with a subset, the
    curves only (cached for the final call)."""
    spec = load_study(name, profile)
    check_spec(spec)
    check_arms(spec, profile)
    chosen = pick_seeds(spec, seeds)
    start = start_checkpoint(spec, profile, progress, start, default="stage4_long_context")
    runs_dir = Path(runs_dir or default_run_dir(profile).parent / "studies" / name)
    runs: Runs = {}
    for arm, seed in tqdm([(a, s) for a in spec.arms for s in chosen], desc=name, disable=not progress):
        runs.setdefault(arm, {})[seed] = grpo_curve(start, runs_dir / f"{arm}-seed{seed}", profile, arm, seed,
                                                    spec, tracking, f"study-{name}-{profile}")
    if chosen != spec.seeds:
        return {"study": name, "profile": profile, "seeds_run": list(chosen), "runs": runs}
    tasks = list(spec.eval_tasks)
    configs = {arm: arm_config(spec, profile, arm, 0) for arm in spec.arms}
    difficulty = next(iter(configs.values())).difficulty
    chance = chance_levels(tasks, spec.eval_n, difficulty=difficulty)
    result = {"study": name, "profile": profile, "what": spec.what, "start": relative_to_runs(start),
              "settings": {arm: {k: v for k, v in cfg.__dict__.items() if k not in ("seed",)}
                           for arm, cfg in configs.items()},
              "chance": chance, "headroom": headroom(runs, tasks, chance), "pilot": spec.pilot,
              **summarise(runs, tasks, list(spec.compare), spec.test)}
    if name == "interference":
        result["interference"] = interference(runs, spec)
    result["claims"] = grpo_claims(name, result, runs)
    write_study(name, result, runs, tasks, "rollouts", out)
    training_figure(runs, out / f"{name}_training.png", f"{name}: training statistics per arm ({profile})")
    with open(out / f"{name}.md", "a") as md:
        md.write(f"\n![{name} training]({name}_training.png)\n")
    return result


def interference(runs: Runs, spec: StudySpec) -> list[dict]:
    """Per task a single-task arm trained on: the mixed run's final score minus that arm's (Welch over
    seeds, with its 95% CI), and the same for the task's training response length."""
    out = []
    for single in (a for a in spec.arms if a != "mixed"):
        for task in spec.arms[single].get("tasks", {}):
            pair = {k: runs[k] for k in ("mixed", single)}
            if task in spec.eval_tasks:
                finals = final_scores(pair, task)
                if finals[single] and finals["mixed"]:
                    out.append({"task": task, "single": single, "what": "score",
                                **welch(finals[single], finals["mixed"])})
            lengths = final_scores(pair, task, key=f"train/response_length/{task}")
            if lengths[single] and lengths["mixed"]:
                out.append({"task": task, "single": single, "what": "response length",
                            **welch(lengths[single], lengths["mixed"])})
    return out


def _gains(runs: Runs, arm: str, task: str, first: int, last: int) -> list[float]:
    """Per seed: the held-out score at curve point ``last`` minus that at ``first`` (indices)."""
    key = f"score/{task}"
    return [c[last][key] - c[first][key] for c in runs.get(arm, {}).values() if key in c[0]]


def grpo_claims(name: str, result: dict, runs: Runs, flat: float = 0.05) -> list[dict]:
    """The report's claims against the measured numbers, each 'agrees' / 'disagrees' / 'cannot tell'
    from a 95% CI over seeds (rules in notebooks 10 and 11). ``flat``: a gain below it is a plateau."""
    claims = []

    def claim(text: str, task: str, stats: dict, **rule) -> None:
        claims.append({"claim": text, "task": task, "value": stats["diff"], "ci": [stats["ci_low"], stats["ci_high"]],
                       "verdict": claim_verdict(stats["ci_low"], stats["ci_high"], **rule)})

    if name == "grpo_modes":
        for t in result["tests"]:  # vanilla - on_policy, final held-out score
            claim("on-policy ends higher than vanilla", t["task"], t, agrees_below=0.0, disagrees_above=0.0)
        for task in result["chance"]:
            points = len(next(iter(runs["vanilla"].values())))
            early = welch(_gains(runs, "on_policy", task, 0, 1), _gains(runs, "vanilla", task, 0, 1))
            claim("vanilla gains faster early (first measured point)", task, early, agrees_above=0.0,
                  disagrees_below=0.0)
            late = mean_ci(_gains(runs, "vanilla", task, points // 2, -1))
            claim(f"vanilla flattens (second-half gain < {flat})", task, late, agrees_below=flat, disagrees_above=0.0)
            late = mean_ci(_gains(runs, "on_policy", task, points // 2, -1))
            claim("on-policy still rising (second-half gain > 0)", task, late, agrees_above=0.0, disagrees_below=flat)
    else:
        for r in result["interference"]:
            if r["what"] == "score":
                claim(f"mixing costs {r['task']} (mixed - {r['single']})", r["task"], r, agrees_below=0.0,
                      disagrees_above=-flat)
            elif r["single"] == "long":
                claim("mixing shortens the long-CoT replies (mixed - long, tokens)", r["task"], r, agrees_below=0.0,
                      disagrees_above=0.0)
    return claims


__all__ = ["arm_config", "check_arms", "grpo_claims", "grpo_curve", "interference", "run_grpo_study", "window_means"]
