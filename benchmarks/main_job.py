"""The main job's wall-clock time per phase, from a finished pipeline run (``timings.json``, written by
``run_pipeline`` as each phase ran), with the machine and the commit of the checkout that ran it.

    python benchmarks/main_job.py <checkout>/runs/cpu/pretrain --json benchmarks/results/cpu_main_job.json \
        [--against <older checkout>/runs/cpu/pretrain]

Run it on the run directory of `make pipeline` on a fresh clone (nothing else running), so every phase ran in that
process. ``--against`` compares the report's results with an earlier run's, paired on the same held-out samples
(the evaluation draws them from fixed seeds): per task of the final evaluation and of MORL's after-scores and
changes, this run minus the other, with a 95% interval (normal, from the per-sample differences' spread).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import machine  # noqa: E402

from mimolab.eval.results import TaskScore, load_scores, mean_stderr  # noqa: E402


def checkout_commit(run_dir: Path) -> str:
    """The commit of the git checkout that holds ``run_dir`` (the fresh clone that ran the job)."""
    out = subprocess.run(["git", "-C", str(run_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def paired(new: list[float], old: list[float], task: str) -> dict:
    """Mean of new - old over the same samples, its 95% interval (normal, from eval.results.mean_stderr), and n."""
    if len(new) != len(old):
        raise ValueError(f"{task}: the runs scored different samples ({len(new)} vs {len(old)})")
    mean, stderr = mean_stderr([a - b for a, b in zip(new, old)])
    return {"difference": round(mean, 4), "ci95": [round(mean - 1.96 * stderr, 4), round(mean + 1.96 * stderr, 4)],
            "n": len(new)}


def against(run_dir: Path, other: Path) -> dict:
    """The report's per-task results of this run against another's, paired per sample."""
    def by_task(rows: list[TaskScore]) -> dict[str, TaskScore]:
        return {r.task: r for r in rows}

    def compared(new: TaskScore, old: TaskScore) -> dict:
        return {"new": new.score, "old": old.score, **paired(new.per_sample, old.per_sample, new.task)}

    out = {"final": {}, "morl_after": {}, "morl_change": {}}
    new, old = (by_task(load_scores(d / "final_eval.json")) for d in (run_dir, other))
    for task in new.keys() & old.keys():
        out["final"][task] = compared(new[task], old[task])
    morl = [json.loads((d / "morl" / "morl.json").read_text()) for d in (run_dir, other)]
    (before_new, after_new), (before_old, after_old) = (
        [by_task([TaskScore.from_dict(r) for r in m[key]]) for key in ("before", "after")] for m in morl)
    for task in after_new.keys() & after_old.keys():
        out["morl_after"][task] = compared(after_new[task], after_old[task])
        gain = lambda before, after: [b - a for a, b in zip(before[task].per_sample, after[task].per_sample)]  # noqa: E731
        out["morl_change"][task] = paired(gain(before_new, after_new), gain(before_old, after_old), task)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the pipeline's run directory (runs/cpu/pretrain)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--against", type=Path, help="an earlier run's directory: the report's results compared")
    args = parser.parse_args()
    timings = json.loads((args.run_dir / "timings.json").read_text())
    # the machine, not its load now (the job ran earlier; run it on a quiet machine)
    where = {k: v for k, v in machine().items() if k not in ("load_average_1_5_15", "torch_threads")}
    result = {"profile": args.run_dir.parent.name, "commit": checkout_commit(args.run_dir), "machine": where,
              "seconds": timings, "total_minutes": round(sum(timings.values()) / 60, 1)}
    if args.against:
        result["against"] = {"commit": checkout_commit(args.against), **against(args.run_dir, args.against)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
