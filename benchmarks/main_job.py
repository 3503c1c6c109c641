"""The main job's wall-clock time per phase, from a finished pipeline run (``timings.json``, written by
``run_pipeline`` as each phase ran), with the machine and the commit of the checkout that ran it.

    python benchmarks/main_job.py <checkout>/runs/cpu/pretrain --json benchmarks/results/cpu_main_job.json

Run it on the run directory of `make pipeline` on a fresh clone (nothing else running), so every phase ran in that
process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import machine  # noqa: E402


def checkout_commit(run_dir: Path) -> str:
    """The commit of the git checkout that holds ``run_dir`` (the fresh clone that ran the job)."""
    out = subprocess.run(["git", "-C", str(run_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the pipeline's run directory (runs/cpu/pretrain)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    timings = json.loads((args.run_dir / "timings.json").read_text())
    # the machine, not its load now (the job ran earlier; run it on a quiet machine)
    where = {k: v for k, v in machine().items() if k not in ("load_average_1_5_15", "torch_threads")}
    result = {"profile": args.run_dir.parent.name, "commit": checkout_commit(args.run_dir), "machine": where,
              "seconds": timings, "total_minutes": round(sum(timings.values()) / 60, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
