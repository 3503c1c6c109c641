"""Study 1 (notebook 09): stages 3-4 from the pipeline's stage-2 checkpoint in each arm, scored against
the training tokens seen."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from mimolab.eval.harness import chance_levels, evaluate
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.stages import default_run_dir, run_stage
from mimolab.pipeline.studies import load_study
from mimolab.pipeline.study_results import Runs, summarise, write_study
from mimolab.processing import MiMoVLProcessor
from mimolab.settings import RESULTS_DIR, relative_to_runs
from mimolab.train.stage import load_stage


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


__all__ = ["run_long_cot_study"]
