"""The main job: every pre-training stage of a profile, the held-out evaluation of every task, MORL
from the last stage (the RL tasks scored before and after on the same samples) and the report.

    report = run_pipeline("cpu")        # runs/cpu/pretrain/report.md;  mimolab pretrain --profile cpu

Each step reads back what an earlier run of it left (a stage's ``final/``, ``final_eval.json``,
``morl/morl.json``), so a killed pipeline continues where it stopped.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from mimolab.data.world import TASKS
from mimolab.eval.harness import evaluate
from mimolab.eval.results import load_scores, save_scores
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.morl import run_morl
from mimolab.pipeline.report import TIMINGS, write_report
from mimolab.pipeline.stages import check_eval_n, default_run_dir, run_stage, stages_for
from mimolab.processing import MiMoVLProcessor
from mimolab.settings import RESULTS_DIR


def run_pipeline(profile: str = "cpu", run_dir: str | Path | None = None, *, tracking: str | None = None,
                 progress: bool = True, eval_n: int = 32, final_eval_n: int | None = None, morl: bool = True,
                 morl_eval_n: int | None = None, studies_dir: str | Path | None = None) -> Path:
    """Every stage of the profile, the held-out evaluation on all tasks, MORL (GRPO from the last
    stage, RL tasks scored before and after on ``morl_eval_n`` samples each; ``morl=False`` stops
    before it) and the report, which ends with the studies' summary read from ``studies_dir`` (default
    ``experiments/results``)."""
    check_eval_n("eval_n", eval_n, allow_zero=True)
    for name, n in (("final_eval_n", final_eval_n), ("morl_eval_n", morl_eval_n)):
        if n is not None:
            check_eval_n(name, n)
    run_dir = Path(run_dir) if run_dir else default_run_dir(profile)
    results = []
    for name in stages_for(profile):
        with timed(run_dir, name, done=(run_dir / name / "final").exists()):
            results.append(run_stage(name, profile, run_dir, tracking=tracking, progress=progress, eval_n=eval_n))
    final_file = run_dir / "final_eval.json"
    with timed(run_dir, "final evaluation", done=final_file.exists()):
        _final_eval(results[-1], final_file, final_eval_n or eval_n, progress)
    rl = None
    if morl:
        with timed(run_dir, "MORL (GRPO, evaluations before and after)", done=(run_dir / "morl" / "morl.json").exists()):
            rl = run_morl(profile, results[-1].final, run_dir / "morl", tracking=tracking, progress=progress,
                          eval_n=morl_eval_n or final_eval_n or eval_n)
    return write_report(run_dir, profile, results, load_scores(final_file), rl,
                        studies_dir=Path(studies_dir) if studies_dir else RESULTS_DIR)


@contextmanager
def timed(run_dir: Path, phase: str, done: bool):
    """Wall-clock seconds of a phase that runs now, merged into ``run_dir/timings.json`` (the report's table); a
    phase read back from an earlier run keeps the time it took then."""
    start = time.perf_counter()
    yield
    if not done:
        path = run_dir / TIMINGS
        timings = json.loads(path.read_text()) if path.exists() else {}
        timings[phase] = round(time.perf_counter() - start, 1)
        path.write_text(json.dumps(timings, indent=2))


def _final_eval(last, final_file: Path, n: int, progress: bool) -> None:
    if not final_file.exists():
        # the last stage already scored its own tasks on these very samples (same model, seed, n, difficulty)
        done = {row.task: row for row in last.eval if row.n == n and last.stage.seed == 0}
        model = MiMoVL.from_pretrained(last.final)
        scores = {row.task: row for row in evaluate(
            model, MiMoVLProcessor.from_pretrained(last.final), [t for t in TASKS if t not in done], n=n,
            difficulty=last.stage.difficulty, progress=progress)}
        save_scores([scores.get(t) or done[t] for t in TASKS], final_file)


__all__ = ["run_pipeline"]
