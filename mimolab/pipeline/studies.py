"""The three studies behind MiMo-VL's findings, as functions notebooks 09-11 call.

| study | file | arms | question |
|---|---|---|---|
| ``long_cot`` | experiments/studies/long_cot.yaml | stages 3-4 with / without long-CoT data, same tokens | does reasoning keep improving with training tokens? |
| ``grpo_modes`` | experiments/studies/grpo_modes.yaml | on-policy (1 update per batch) / vanilla (4, clipped) | which GRPO learns more from the same rollouts? |
| ``interference`` | experiments/studies/interference.yaml | RL on short-answer tasks / long-CoT tasks / the mixture | does mixing the tasks cost either side? |

Every arm runs once per seed; held-out scores are measured along the way. ``study_results`` turns
the curves into each arm's mean and spread over seeds and a Welch test between the arms compared,
and writes ``experiments/results/<study>.json``, ``.md`` and ``.png``; W&B runs are grouped per study.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mimolab.eval.harness import chance_levels, evaluate
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.stages import default_run_dir, run_stage
from mimolab.pipeline.study_results import Runs, final_scores, summarise, training_figure, welch, write_study
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import load_grpo_config
from mimolab.rl.trainer import GRPOTrainer
from mimolab.settings import RESULTS_DIR, check_keys, check_value, load_run_file, relative_to_runs, runs_root
from mimolab.train.stage import check_tasks, load_stage
from mimolab.train.tracking import Tracker


@dataclass(frozen=True)
class StudySpec:
    """One study file at one profile (``experiments/studies/<name>.yaml``)."""

    name: str
    arms: dict[str, dict[str, Any]]  # arm -> its overrides (GRPO settings, or ``drop`` for long_cot)
    compare: tuple[tuple[str, str], ...]  # (baseline, arm) pairs tested
    eval_tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    eval_n: int
    what: str = ""
    steps: int = 0  # GRPO studies: steps per run
    eval_every: int = 0  # GRPO studies: held-out scores every this many steps
    stage3_steps: int = 0  # long_cot: steps of each stage
    stage4_steps: int = 0

    def __post_init__(self) -> None:
        source = f"study {self.name!r}"
        if not self.arms or not self.seeds:
            raise ValueError(f"{source}: needs at least one arm and one seed")
        for pair in self.compare:
            unknown = [arm for arm in pair if arm not in self.arms]
            if len(pair) != 2 or unknown:
                raise ValueError(f"{source}: compare {list(pair)} must name two of the arms {sorted(self.arms)}")
        check_tasks(source, {}, self.eval_tasks)
        for seed in self.seeds:
            check_value(source, "seed", seed, integer=True)
        check_value(source, "eval_n", self.eval_n, integer=True, low=2)
        for name in ("steps", "eval_every", "stage3_steps", "stage4_steps"):
            check_value(source, name, getattr(self, name), integer=True, low=0)


def load_study(name_or_path: str | Path, profile: str) -> StudySpec:
    """A study file's settings at ``profile`` (top-level defaults, ``profiles.<profile>`` overrides)."""
    spec = load_run_file("studies", name_or_path, profile)
    check_keys(spec, StudySpec, f"study file {spec['name']!r}")
    spec["arms"] = {arm: dict(overrides or {}) for arm, overrides in spec.get("arms", {}).items()}
    spec["compare"] = tuple(tuple(pair) for pair in spec.get("compare", ()))
    spec["eval_tasks"] = tuple(spec.get("eval_tasks", ()))
    spec["seeds"] = tuple(spec.get("seeds", ()))
    return StudySpec(**spec)


def results_dir(profile: str, run_dir: str | Path | None = None) -> Path:
    """Where a study writes its results: the committed ``experiments/results``, except at the smoke
    profile (CI), which writes into ``run_dir/results`` (default: under the runs root) and leaves the
    committed results alone."""
    if profile != "smoke":
        return RESULTS_DIR
    return Path(run_dir or runs_root() / "smoke" / "studies") / "results"


# ------------------------------------------------------------------------------------ GRPO studies
def grpo_curve(start: Path, run_dir: Path, profile: str, arm: dict, seed: int, tasks: tuple[str, ...],
               spec: StudySpec, tracking: str | None, group: str) -> list[dict]:
    """One GRPO run from ``start`` with the arm's overrides; held-out scores every ``eval_every`` steps."""
    done = run_dir / "curve.json"
    if done.exists():
        return json.loads(done.read_text())
    model, processor = MiMoVL.from_pretrained(start), MiMoVLProcessor.from_pretrained(start)
    cfg = load_grpo_config("grpo_on_policy", profile, seed=seed, steps=spec.steps, **arm)
    curve, rollouts = [], 0

    def measure(step: int, record: dict | None) -> None:
        rows = evaluate(model, processor, list(tasks), n=spec.eval_n, seed=0, difficulty=cfg.difficulty, progress=False)
        curve.append({"step": step, "rollouts": rollouts, **{f"score/{r.task}": r.score for r in rows},
                      **{k: v for k, v in (record or {}).items() if k.startswith(("reward/", "response_length/"))}})

    with Tracker(run_dir, {**cfg.__dict__, "seed": seed}, mode=tracking, name=run_dir.name, group=group) as tracker:
        trainer = GRPOTrainer(model, processor, cfg, run_dir, tracker=tracker)
        try:
            measure(0, None)
            for step in range(1, spec.steps + 1):
                record = trainer.step()
                rollouts += cfg.prompts_per_step * cfg.group_size
                if step % spec.eval_every == 0 or step == spec.steps:
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
    spec = load_study(name, profile)
    start = Path(start) if start else run_stage("stage4_long_context", profile, progress=progress).final
    runs_dir = runs_dir or default_run_dir(profile).parent / "studies" / name
    runs: Runs = {}
    for arm, seed in tqdm([(a, s) for a in spec.arms for s in spec.seeds], desc=name, disable=not progress):
        overrides = dict(spec.arms[arm])
        if "tasks" in overrides:
            overrides["tasks"] = tuple((t, float(w)) for t, w in overrides["tasks"].items())
        runs.setdefault(arm, {})[seed] = grpo_curve(start, runs_dir / f"{arm}-seed{seed}", profile, overrides, seed,
                                                    spec.eval_tasks, spec, tracking, f"study-{name}-{profile}")
    tasks = list(spec.eval_tasks)
    difficulty = load_grpo_config("grpo_on_policy", profile).difficulty
    result = {"study": name, "profile": profile, "what": spec.what, "start": relative_to_runs(start),
              "chance": chance_levels(tasks, spec.eval_n, difficulty=difficulty),
              **summarise(runs, tasks, list(spec.compare))}
    if name == "interference":
        result["interference"] = interference(runs, spec)
    write_study(name, result, runs, tasks, "rollouts", out)
    training = training_figure(runs_dir, list(spec.arms), list(spec.seeds), out / f"{name}_training.png",
                               f"{name}: training reward and response length per task ({profile})")
    if training:
        with open(out / f"{name}.md", "a") as md:
            md.write(f"\n![{name} training]({name}_training.png)\n")
    return result


def interference(runs: Runs, spec: StudySpec) -> list[dict]:
    """Per task: the mixed run's final score minus the single-task run's that trained on it (mean over seeds)."""
    out = []
    for single in (a for a in spec.arms if a != "mixed"):
        for task in spec.arms[single]["tasks"]:
            if task in spec.eval_tasks:
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
    spec = load_study("long_cot", profile)
    tasks = list(spec.eval_tasks)
    start = run_stage("stage2_alignment", profile, progress=progress).final
    runs_dir = runs_dir or default_run_dir(profile).parent / "studies" / "long_cot"
    runs: Runs = {}

    def scores(path: Path, difficulty) -> dict:
        model, processor = MiMoVL.from_pretrained(path), MiMoVLProcessor.from_pretrained(path)
        return {f"score/{r.task}": r.score for r in evaluate(model, processor, tasks, n=spec.eval_n,
                                                              difficulty=difficulty, progress=False)}

    for arm, seed in tqdm([(a, s) for a in spec.arms for s in spec.seeds], desc="long_cot", disable=not progress):
        drop = spec.arms[arm].get("drop", [])
        run_dir, init, tokens, curve = runs_dir / f"{arm}-seed{seed}", start, 0, []
        for name, steps in (("stage3_multimodal", spec.stage3_steps), ("stage4_long_context", spec.stage4_steps)):
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
    result = {"study": "long_cot", "profile": profile, "what": spec.what, "start": relative_to_runs(start),
              "chance": chance_levels(tasks, spec.eval_n, difficulty=load_stage("stage4_long_context", profile).difficulty),
              **summarise(runs, tasks, list(spec.compare))}
    write_study("long_cot", result, runs, tasks, "tokens", out)
    return result


__all__ = ["StudySpec", "interference", "load_study", "results_dir", "run_grpo_study", "run_long_cot_study"]
