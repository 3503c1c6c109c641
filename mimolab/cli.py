"""The ``mimolab`` command line.

    mimolab params --preset mimo-vl-7b      per-component parameter table of a preset
    mimolab pretrain --profile cpu          the main job: stages 0-4, evaluation, MORL, report.md under $MIMOLAB_RUNS (runs/)
    mimolab pretrain --stage stage3_multimodal --profile cpu    one stage (and the ones it starts from)
    mimolab tour --profile cpu              notebook 00 (the model tour) executed into runs/
    mimolab notebook 03 --profile smoke     execute any numbered notebook into a run directory
    mimolab eval CHECKPOINT --modes think,no_think --benchmark file.tsv   held-out tasks + benchmark files
    mimolab samples --out data_samples      regenerate the committed sample of every data type

Each subcommand imports what it needs when it runs, so ``mimolab --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mimolab.settings import PROFILES, REPO_ROOT, runs_root


def cmd_params(args: argparse.Namespace) -> int:
    from mimolab.config import MiMoVLConfig
    from mimolab.model import parameter_table

    rows = parameter_table(MiMoVLConfig.from_name(args.preset))
    width = max(len(name) for name, _ in rows)
    print(f"{'component':<{width}}  {'parameters':>15}")
    for name, count in rows:
        print(f"{name:<{width}}  {count:>15,}")
    return 0


def find_notebook(spec: str, folder: Path = REPO_ROOT / "notebooks") -> Path:
    """A notebook by path, or by its number prefix in notebooks/ (``00`` -> notebooks/00_*.ipynb)."""
    path = Path(spec)
    if path.suffix == ".ipynb" and path.exists():
        return path
    matches = sorted(folder.glob(f"{spec}_*.ipynb")) or sorted(folder.glob(f"{spec}*.ipynb"))
    if not matches:
        raise SystemExit(f"no notebook matching {spec!r} in {folder}")
    return matches[0]


def run_notebook(spec: str, profile: str, out: str | None = None) -> Path:
    """Execute a notebook with papermill at a profile; returns the run directory (its ``run_dir``
    parameter: where the notebook writes, and where its executed copy lands)."""
    import papermill

    notebook = find_notebook(spec)
    run_dir = Path(out) if out else runs_root() / f"{notebook.stem}-{profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")  # read by wandb in the kernel: never hang on a missing key
    papermill.execute_notebook(str(notebook), str(run_dir / notebook.name), cwd=str(notebook.parent),
                               parameters={"profile": profile, "run_dir": str(run_dir.resolve())},
                               progress_bar=sys.stderr.isatty())
    print(f"executed {notebook.name} at profile {profile}: {run_dir}")
    return run_dir


def cmd_notebook(args: argparse.Namespace) -> int:
    run_notebook(args.notebook, args.profile, args.out)
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    run_notebook("00", args.profile, args.out)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import logging

    from mimolab.pipeline import default_run_dir, run_pipeline, run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_dir = Path(args.out) if args.out else default_run_dir(args.profile)
    if args.stage:
        result = run_stage(args.stage, args.profile, run_dir, tracking=args.wandb, eval_n=args.eval_n,
                           accelerator=_accelerator_if_launched())
        print(f"{result.name} done: {result.final}")
        return 0
    start = time.time()
    report = run_pipeline(args.profile, run_dir, tracking=args.wandb, eval_n=args.eval_n,
                          final_eval_n=args.final_eval_n, morl_eval_n=args.morl_eval_n)
    print(f"pre-training pipeline at profile {args.profile} done in {(time.time() - start) / 60:.1f} min: {report}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from mimolab.pipeline.studies import results_dir, run_grpo_study, run_long_cot_study

    out = Path(args.out) if args.out else results_dir(args.profile)
    if args.name == "long_cot":
        result = run_long_cot_study(args.profile, out=out, tracking=args.wandb)
    else:
        result = run_grpo_study(args.name, args.profile, args.start, out=out, tracking=args.wandb)
    print((out / f"{args.name}.md").read_text())
    return 0 if result else 1


def _accelerator_if_launched():
    """An Accelerator when started by ``accelerate launch`` / ``torchrun`` with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from mimolab.train.loop import make_accelerator

        return make_accelerator()
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    from mimolab.eval.run import run_eval

    tasks = None if args.tasks == "all" else [t for t in args.tasks.split(",") if t]
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval"
    rows = run_eval(args.checkpoint, tasks=tasks, n=args.n, difficulty=args.difficulty, benchmarks=args.benchmark,
                    modes=tuple(args.modes.split(",")), out=out, limit=args.limit)
    print((out / "results.md").read_text())
    print(f"{len(rows)} rows written to {out}/results.{{csv,md,json,png}}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from mimolab.data.samples import make_samples

    make_samples(args.out)
    print(f"wrote samples of every data type to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimolab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="per-component parameter table of a model preset")
    p.add_argument("--preset", default="mimo-vl-7b", choices=PROFILES)
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("notebook", help="execute a numbered notebook into a run directory")
    p.add_argument("notebook", help="number prefix (00, 03...) or path of an .ipynb")
    p.add_argument("--profile", default="cpu", choices=PROFILES[:3])
    p.add_argument("--out", help="run directory (default $MIMOLAB_RUNS/<notebook>-<profile>-<time>, runs/ unless set)")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("tour", help="the model tour (notebook 00)")
    p.add_argument("--profile", default="cpu", choices=PROFILES[:3])
    p.add_argument("--out")
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("pretrain", help="the pre-training pipeline (stages 0-4, evaluation, report)")
    p.add_argument("--profile", default="cpu", choices=PROFILES)
    p.add_argument("--stage", help="run one stage (a name such as stage3_multimodal, or a stage YAML file) and the "
                                   "stages it starts from")
    p.add_argument("--out", help="run directory (default $MIMOLAB_RUNS/<profile>/pretrain, runs/ unless set)")
    p.add_argument("--eval-n", type=int, default=100, help="held-out samples per task in each stage's evaluation")
    p.add_argument("--final-eval-n", type=int, default=200,
                   help="held-out samples per task in the final evaluation")
    p.add_argument("--morl-eval-n", type=int, default=400,
                   help="held-out samples per RL task in MORL's paired before/after (its changes are a few points: "
                        "at 400 a +0.05 change on a task near 0.8 is about 2 standard errors, at 200 about 1.5)")
    p.add_argument("--wandb", choices=("online", "offline", "disabled"),
                   help="W&B mode (default: WANDB_MODE, else online with an API key, else offline)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("eval", help="evaluate a checkpoint: held-out world tasks and benchmark files")
    p.add_argument("checkpoint", help="a checkpoint directory (model and processor)")
    p.add_argument("--tasks", default="all", help="comma-separated world tasks, 'all', or '' for none")
    p.add_argument("--n", type=int, default=40, help="held-out samples per world task")
    p.add_argument("--difficulty", type=float, default=0.5)
    p.add_argument("--benchmark", action="append", default=[], help="a benchmark file (MC VQA, RefCOCO, VQA; repeatable)")
    p.add_argument("--limit", type=int, help="at most this many records per benchmark file")
    p.add_argument("--modes", default="think", help="think, no_think or think,no_think")
    p.add_argument("--out", help="results directory (default CHECKPOINT/eval)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("study", help="run one of the three studies (arms x seeds), results to experiments/results")
    p.add_argument("name", choices=("long_cot", "grpo_modes", "interference"))
    p.add_argument("--profile", default="cpu", choices=PROFILES[:3])
    p.add_argument("--start", help="GRPO studies: start checkpoint (default: the pipeline's stage 4)")
    p.add_argument("--out", help="results directory (default experiments/results; smoke: under the runs root)")
    p.add_argument("--wandb", choices=("online", "offline", "disabled"))
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("samples", help="regenerate data_samples/ (a few records of every data type)")
    p.add_argument("--out", default="data_samples")
    p.set_defaults(func=cmd_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
