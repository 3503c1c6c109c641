"""Studies 2 and 3 (notebooks 10-11): GRPO runs from one start checkpoint, one per arm and seed, with
held-out scores along the way; ``grpo_modes`` compares on-policy with vanilla GRPO, ``interference``
RL on short-answer tasks, long-CoT tasks and their mixture."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from mimolab.eval.harness import chance_levels, evaluate
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.stages import default_run_dir, run_stage
from mimolab.pipeline.studies import StudySpec, load_study
from mimolab.pipeline.study_results import Runs, final_scores, summarise, training_figure, welch, write_study
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import load_grpo_config
from mimolab.rl.trainer import GRPOTrainer
from mimolab.settings import RESULTS_DIR, relative_to_runs
from mimolab.train.tracking import Tracker


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


__all__ = ["grpo_curve", "interference", "run_grpo_study"]
