"""The main job: every pre-training stage of a profile, the held-out evaluation of every task, MORL
from the last stage (the RL tasks scored before and after on the same samples) and the report.

    report = run_pipeline("cpu")        # runs/cpu/pretrain/report.md;  mimolab pretrain --profile cpu

Each step reads back what an earlier run of it left (a stage's ``final/``, ``final_eval.json``,
``morl/morl.json``), so a killed pipeline continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from mimolab.data.world import TASKS
from mimolab.eval.harness import evaluate
from mimolab.eval.results import load_scores, save_scores
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.morl import run_morl
from mimolab.pipeline.report import write_report
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
    results = [run_stage(name, profile, run_dir, tracking=tracking, progress=progress, eval_n=eval_n)
               for name in stages_for(profile)]
    final_file = run_dir / "final_eval.json"
    if not final_file.exists():
        last, n = results[-1], final_eval_n or eval_n
        # the last stage already scored its own tasks on these very samples (same model, seed, n, difficulty)
        done = {row.task: row for row in last.eval if row.n == n and last.stage.seed == 0}
        model = MiMoVL.from_pretrained(last.final)
        scores = {row.task: row for row in evaluate(
            model, MiMoVLProcessor.from_pretrained(last.final), [t for t in TASKS if t not in done], n=n,
            difficulty=last.stage.difficulty, progress=progress)}
        save_scores([scores.get(t) or done[t] for t in TASKS], final_file)
    rl = run_morl(profile, results[-1].final, run_dir / "morl", tracking=tracking, progress=progress,
                  eval_n=morl_eval_n or final_eval_n or eval_n) if morl else None
    return write_report(run_dir, profile, results, load_scores(final_file), rl,
                        studies_dir=Path(studies_dir) if studies_dir else RESULTS_DIR)


__all__ = ["run_pipeline"]
