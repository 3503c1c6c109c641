"""The three studies behind MiMo-VL's findings, as functions notebooks 09-11 call.

| study | file | arms | question |
|---|---|---|---|
| ``long_cot`` | experiments/studies/long_cot.yaml | stages 3-4 with / without long-CoT data, same tokens | does reasoning keep improving with training tokens? |
| ``grpo_modes`` | experiments/studies/grpo_modes.yaml | on-policy (1 update per batch) / vanilla (4, clipped) | which GRPO learns more from the same rollouts? |
| ``interference`` | experiments/studies/interference.yaml | RL on short-answer tasks / long-CoT tasks / the mixture | does mixing the tasks cost either side? |

Every arm runs once per seed; held-out scores are measured along the way. ``summarise`` gives each
arm's mean and spread over seeds at the end, and a Welch t-test between the arms compared (p from
the seeds' final scores; p >= 0.05 is reported as not significant). ``write_study`` puts the result
in ``experiments/results/<study>.json``, ``.md`` and ``.png``; W&B runs are grouped per study.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from mimolab.eval.harness import chance_levels

ROOT = Path(__file__).resolve().parents[1]
STUDY_DIR = ROOT / "experiments" / "studies"
RESULTS_DIR = ROOT / "experiments" / "results"


def results_dir(profile: str) -> Path:
    """Where a study notebook writes: ``experiments/results``, except that the smoke runs of CI
    write into their run directory (``MIMOLAB_RUN_DIR``) and leave the committed results alone."""
    if profile != "smoke":
        return RESULTS_DIR
    return Path(os.environ.get("MIMOLAB_RUN_DIR", "runs")) / "results"


def load_study(name: str, profile: str) -> dict[str, Any]:
    """A study file's settings at ``profile`` (top-level defaults, ``profiles.<profile>`` overrides)."""
    from mimolab.train.stage import load_profiled_yaml

    path = STUDY_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no study {name!r}; studies: {sorted(p.stem for p in STUDY_DIR.glob('*.yaml'))}")
    return load_profiled_yaml(path, profile)


def welch(a: list[float], b: list[float]) -> dict[str, float | None]:
    """Difference of means (b - a), Welch's t and its two-sided p (None when either arm has no spread)."""
    from scipy import stats

    diff = sum(b) / len(b) - sum(a) / len(a)
    if len(a) < 2 or len(b) < 2 or (max(a) == min(a) and max(b) == min(b)):
        return {"diff": diff, "t": None, "p": None}
    result = stats.ttest_ind(b, a, equal_var=False)
    return {"diff": diff, "t": float(result.statistic), "p": float(result.pvalue)}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))


def final_scores(runs: dict[str, dict[int, list[dict]]], task: str) -> dict[str, list[float]]:
    """Per arm, each seed's last measured held-out score on ``task``."""
    return {arm: [curve[-1][f"score/{task}"] for curve in seeds.values() if f"score/{task}" in curve[-1]]
            for arm, seeds in runs.items()}


def summarise(runs: dict[str, dict[int, list[dict]]], tasks: list[str], comparisons: list[tuple[str, str]]) -> dict:
    """Mean ± sd over seeds per arm and task, and Welch tests for each (baseline, other) pair."""
    table, tests = [], []
    for task in tasks:
        finals = final_scores(runs, task)
        for arm, values in finals.items():
            if values:
                mean, sd = _mean_sd(values)
                table.append({"task": task, "arm": arm, "mean": mean, "sd": sd, "seeds": len(values)})
        for base, other in comparisons:
            if finals.get(base) and finals.get(other):
                tests.append({"task": task, "baseline": base, "arm": other, **welch(finals[base], finals[other])})
    return {"table": table, "tests": tests}


def verdict(test: dict) -> str:
    if test["p"] is None:
        return "no spread across seeds: no test"
    word = "higher" if test["diff"] > 0 else "lower"
    what = f"{word} by {abs(test['diff']):.3f}"
    if round(test["diff"], 3) == 0:  # a float difference of ~1e-17 would read "lower by 0.000"
        what = "the same to 3 decimals"
    if test["p"] < 0.05:
        return f"{what} (Welch p = {test['p']:.3f}): significant"
    return f"{what} (Welch p = {test['p']:.2f}): not significant"


def _chance(result: dict, task: str) -> str:
    """The task's chance level as a table cell ('-' in results written before chance was recorded)."""
    chance = result.get("chance", {})
    return f"{chance[task]:.3f}" if task in chance else "-"


def markdown(name: str, result: dict) -> str:
    lines = [f"# Study `{name}` (profile `{result['profile']}`)", "", result.get("what", ""), "",
             "| task | arm | final score (mean ± sd over seeds) | chance | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['arm']} | {r['mean']:.3f} ± {r['sd']:.3f} | {_chance(result, r['task'])} | "
              f"{r['seeds']} |" for r in result["table"]]
    lines += ["", "| task | arm vs baseline | difference | Welch t | p | reading |", "|---|---|---|---|---|---|"]
    for t in result["tests"]:
        tt = "-" if t["t"] is None else f"{t['t']:.2f}"
        p = "-" if t["p"] is None else f"{t['p']:.3f}"
        lines.append(f"| {t['task']} | {t['arm']} vs {t['baseline']} | {t['diff']:+.3f} | {tt} | {p} | {verdict(t)} |")
    return "\n".join(lines) + "\n"


def curves_figure(runs: dict[str, dict[int, list[dict]]], tasks: list[str], x: str, path: Path, title: str,
                  chance: dict[str, float] | None = None) -> Path:
    """Held-out score against ``x`` per arm, mean and band over seeds; chance as a dashed line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = [{"arm": arm, "seed": seed, x: r[x], "task": task, "score": r[f"score/{task}"]}
            for arm, seeds in runs.items() for seed, curve in seeds.items() for r in curve for task in tasks
            if f"score/{task}" in r]
    frame = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = frame[frame["task"] == task]
        if len(part):
            sns.lineplot(part, x=x, y="score", hue="arm", errorbar="sd", marker="o", ax=ax)
        if chance and task in chance:
            ax.axhline(chance[task], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set(title=task, ylim=(0, 1))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 400k, not 400000
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_figure(runs_dir: Path, arms: list[str], seeds: list[int], path: Path, title: str) -> Path | None:
    """GRPO studies: training reward and response length per task against step, per arm (mean and band
    over seeds), from each run's ``metrics.jsonl``. None when no run has logged a step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = []
    for arm in arms:
        for seed in seeds:
            metrics = runs_dir / f"{arm}-seed{seed}" / "metrics.jsonl"
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
            for r in records:
                tasks = [k.removeprefix("reward/") for k in r if k.startswith("reward/")]
                rows += [{"arm": arm, "seed": seed, "step": r["step"], "task": task, "reward": r[f"reward/{task}"],
                          "response length": r.get(f"response_length/{task}")} for task in tasks]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    tasks = sorted(frame["task"].unique())
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.6 * len(tasks), 5.8), squeeze=False)
    for col, task in enumerate(tasks):
        part = frame[frame["task"] == task]
        for row, y in enumerate(("reward", "response length")):
            sns.lineplot(part, x="step", y=y, hue="arm", errorbar="sd", ax=axes[row][col], legend=col == 0 and row == 0)
            axes[row][col].set(title=task if row == 0 else "")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_study(name: str, result: dict, runs: dict, tasks: list[str], x: str, out: Path = RESULTS_DIR) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps({**result, "runs": {a: {str(s): c for s, c in v.items()} for a, v in runs.items()}},
                                        indent=2))
    paths["md"].write_text(markdown(name, result) + f"\n![{name}]({name}.png)\n")
    curves_figure(runs, tasks, x, paths["png"], f"{name}: held-out score ({result['profile']})", result.get("chance"))
    return paths


STUDIES = {"long_cot": "notebook 09", "grpo_modes": "notebook 10", "interference": "notebook 11"}


def studies_summary(results_dir: Path = RESULTS_DIR) -> list[str]:
    """Markdown lines for the pipeline report: every comparison of every study with results in
    ``results_dir`` (with the profile they were run at), and the command for those not yet run."""
    lines = ["## Studies", "", "From `experiments/results/<study>.json` (written by the study notebooks or "
             "`mimolab study NAME`); mean over seeds, Welch's test across seeds.", "",
             "| study | profile | task | arm vs baseline | arm | baseline | chance | difference | p | reading |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    missing = []
    for name, notebook in STUDIES.items():
        path = results_dir / f"{name}.json"
        if not path.exists():
            missing.append(f"`{name}` ({notebook}; `mimolab study {name} --profile cpu`)")
            continue
        result = json.loads(path.read_text())
        means = {(r["task"], r["arm"]): r["mean"] for r in result["table"]}
        for t in result["tests"]:
            p = "-" if t["p"] is None else f"{t['p']:.3f}"
            lines.append(f"| {name} | {result['profile']} | {t['task']} | {t['arm']} vs {t['baseline']} | "
                         f"{means[t['task'], t['arm']]:.2f} | {means[t['task'], t['baseline']]:.2f} | "
                         f"{_chance(result, t['task'])} | "
                         f"{t['diff']:+.3f} | {p} | {verdict(t)} |")
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    return lines + [""]


# ------------------------------------------------------------------------------------ GRPO studies
def grpo_curve(start: Path, run_dir: Path, profile: str, arm: dict, seed: int, tasks: list[str], eval_every: int,
               eval_n: int, steps: int, tracking: str | None, group: str, progress: bool) -> list[dict]:
    """One GRPO run from ``start`` with the arm's overrides; held-out scores every ``eval_every`` steps."""
    from mimolab.eval import evaluate
    from mimolab.model.vlm import MiMoVL
    from mimolab.processing import MiMoVLProcessor
    from mimolab.rl.grpo import load_grpo_config
    from mimolab.rl.trainer import GRPOTrainer
    from mimolab.train.tracking import Tracker

    done = run_dir / "curve.json"
    if done.exists():
        return json.loads(done.read_text())
    model, processor = MiMoVL.from_pretrained(start), MiMoVLProcessor.from_pretrained(start)
    cfg = load_grpo_config("grpo_on_policy", profile, seed=seed, steps=steps, **arm)
    curve, rollouts = [], 0

    def measure(step: int, record: dict | None) -> None:
        rows = evaluate(model, processor, tasks, n=eval_n, seed=0, difficulty=cfg.difficulty, progress=False)
        curve.append({"step": step, "rollouts": rollouts, **{f"score/{r.task}": r.score for r in rows},
                      **{k: v for k, v in (record or {}).items() if k.startswith(("reward/", "response_length/"))}})

    with Tracker(run_dir, {**cfg.__dict__, "seed": seed}, mode=tracking, name=run_dir.name, group=group) as tracker:
        trainer = GRPOTrainer(model, processor, cfg, run_dir, tracker=tracker)
        try:
            measure(0, None)
            for step in range(1, steps + 1):
                record = trainer.step()
                rollouts += cfg.prompts_per_step * cfg.group_size
                if step % eval_every == 0 or step == steps:
                    measure(step, record)
                    tracker.log({f"eval/{k[6:]}": v for k, v in curve[-1].items() if k.startswith("score/")}, step=step)
        finally:
            trainer.close()
    done.write_text(json.dumps(curve))
    return curve


def run_grpo_study(name: str, profile: str, start: str | Path | None = None, *, out: Path = RESULTS_DIR,
                   runs_dir: Path | None = None, tracking: str | None = None, progress: bool = True) -> dict:
    """``grpo_modes`` or ``interference``: every arm x seed from the same start checkpoint (default:
    the pipeline's stage 4), the same rollout budget per arm. Writes and returns the study result."""
    from tqdm.auto import tqdm

    from mimolab.rl.grpo import load_grpo_config
    from mimolab.train.pretrain import default_run_dir, run_stage

    spec = load_study(name, profile)
    start = Path(start) if start else run_stage("stage4_long_context", profile, progress=progress).final
    runs_dir = runs_dir or default_run_dir(profile).parent / "studies" / name
    tasks = spec["eval_tasks"]
    runs: dict[str, dict[int, list[dict]]] = {}
    jobs = [(arm, seed) for arm in spec["arms"] for seed in spec["seeds"]]
    for arm, seed in tqdm(jobs, desc=name, disable=not progress):
        overrides = dict(spec["arms"][arm] or {})
        if "tasks" in overrides:
            overrides["tasks"] = tuple((t, float(w)) for t, w in overrides["tasks"].items())
        runs.setdefault(arm, {})[seed] = grpo_curve(
            start, runs_dir / f"{arm}-seed{seed}", profile, overrides, seed, tasks, spec["eval_every"], spec["eval_n"],
            spec["steps"], tracking, f"study-{name}-{profile}", progress=False)
    comparisons = [tuple(c) for c in spec["compare"]]
    difficulty = load_grpo_config("grpo_on_policy", profile).difficulty
    result = {"study": name, "profile": profile, "what": spec.get("what", ""), "start": str(start),
              "chance": chance_levels(tasks, spec["eval_n"], difficulty=difficulty), **summarise(runs, tasks, comparisons)}
    if name == "interference":
        result["interference"] = interference(runs, spec)
    write_study(name, result, runs, tasks, "rollouts", out)
    training = training_figure(runs_dir, list(spec["arms"]), spec["seeds"], out / f"{name}_training.png",
                               f"{name}: training reward and response length per task ({profile})")
    if training:
        with open(out / f"{name}.md", "a") as md:
            md.write(f"\n![{name} training]({name}_training.png)\n")
    return result


def interference(runs: dict, spec: dict) -> list[dict]:
    """Per task: the mixed run's final score minus the single-task run's that trained on it (mean over seeds)."""
    out = []
    for single in (a for a in spec["arms"] if a != "mixed"):
        for task in spec["arms"][single]["tasks"]:
            if task in spec["eval_tasks"]:
                finals = final_scores({k: runs[k] for k in ("mixed", single)}, task)
                if finals[single] and finals["mixed"]:
                    out.append({"task": task, "single": single, **welch(finals[single], finals["mixed"])})
    return out


# ------------------------------------------------------------------------------------ long-CoT study
def run_long_cot_study(profile: str, *, out: Path = RESULTS_DIR, runs_dir: Path | None = None,
                       tracking: str | None = None, progress: bool = True) -> dict:
    """Stages 3-4 from the pipeline's stage-2 checkpoint, with and without the long-CoT reasoning data
    (its token share given to the other data types), per seed; scores after stage 2, 3 and 4 against
    the training tokens seen."""
    from tqdm.auto import tqdm

    from mimolab.eval import evaluate
    from mimolab.model.vlm import MiMoVL
    from mimolab.processing import MiMoVLProcessor
    from mimolab.train.pretrain import default_run_dir, run_stage
    from mimolab.train.stage import load_stage

    spec = load_study("long_cot", profile)
    tasks = spec["eval_tasks"]
    start = run_stage("stage2_alignment", profile, progress=progress).final
    runs_dir = runs_dir or default_run_dir(profile).parent / "studies" / "long_cot"
    runs: dict[str, dict[int, list[dict]]] = {}

    def scores(path: Path, difficulty) -> dict:
        model, processor = MiMoVL.from_pretrained(path), MiMoVLProcessor.from_pretrained(path)
        return {f"score/{r.task}": r.score for r in evaluate(model, processor, tasks, n=spec["eval_n"],
                                                              difficulty=difficulty, progress=False)}

    for arm, seed in tqdm([(a, s) for a in spec["arms"] for s in spec["seeds"]], desc="long_cot", disable=not progress):
        drop = spec["arms"][arm].get("drop", [])
        run_dir, init, tokens, curve = runs_dir / f"{arm}-seed{seed}", start, 0, []
        for name, steps in (("stage3_multimodal", spec["stage3_steps"]), ("stage4_long_context", spec["stage4_steps"])):
            stage = load_stage(name, profile)
            shares = {t: s for t, s in stage.shares.items() if t not in drop}
            total = sum(shares.values())
            if not curve:
                curve.append({"stage": "stage2_alignment", "tokens": 0, **scores(init, stage.difficulty)})
            result = run_stage(name, profile, run_dir, tracking=tracking, progress=False, init_from=str(init),
                               steps=steps, seed=seed, shares={t: s / total for t, s in shares.items()})
            tokens += steps * stage.row_tokens * stage.rows_per_step
            curve.append({"stage": name, "tokens": tokens, **scores(result.final, stage.difficulty)})
            init = result.final
        runs.setdefault(arm, {})[seed] = curve
    result = {"study": "long_cot", "profile": profile, "what": spec.get("what", ""), "start": str(start),
              "chance": chance_levels(tasks, spec["eval_n"], difficulty=load_stage("stage4_long_context", profile).difficulty),
              **summarise(runs, tasks, [tuple(c) for c in spec["compare"]])}
    write_study("long_cot", result, runs, tasks, "tokens", out)
    return result


__all__ = ["STUDIES", "load_study", "results_dir", "run_grpo_study", "run_long_cot_study", "studies_summary", "summarise",
           "welch", "write_study"]
