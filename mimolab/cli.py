"""The ``mimolab`` command line.

    mimolab params --preset mimo-vl-7b      per-component parameter table of a preset
    mimolab pretrain --profile cpu          the main job: stages 0-4, evaluation, MORL, report.md under $MIMOLAB_RUNS (runs/)
    mimolab pretrain --stage stage3_multimodal --profile cpu    one stage (and the ones it starts from)
    mimolab tour --profile cpu              notebook 00 (the model tour) executed into runs/
    mimolab notebook 03 --profile smoke     execute any numbered notebook into a run directory
    mimolab eval CHECKPOINT --modes think,no_think --benchmark file.tsv   held-out tasks + benchmark files
    mimolab samples --out data_samples      regenerate the committed sample of every data type
    mimolab sft CHECKPOINT --data chat.jsonl [--data more.parquet:0.3] --out DIR   fine-tune on your files
    mimolab grpo CHECKPOINT --prompts prompts.jsonl --reward verifiable --out DIR GRPO on your prompts
    mimolab pages DOC.pdf --checkpoint DIR --prompt "..." --out answers.jsonl     every page of some PDFs

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
    from mimolab.pipeline.studies import results_dir
    from mimolab.pipeline.study_grpo import run_grpo_study
    from mimolab.pipeline.study_long_cot import run_long_cot_study

    out = Path(args.out) if args.out else results_dir(args.profile)
    if args.name == "long_cot":
        result = run_long_cot_study(args.profile, out=out, tracking=args.wandb, seeds=args.seeds)
    else:
        result = run_grpo_study(args.name, args.profile, args.start, out=out, tracking=args.wandb, seeds=args.seeds)
    if args.seeds is not None and "table" not in result:
        print(f"{args.name}: seeds {args.seeds} done (curves cached); run without --seeds to write the results")
        return 0
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
    rows = _user_error("eval", lambda: run_eval(
        args.checkpoint, tasks=tasks, n=args.n, difficulty=args.difficulty, benchmarks=args.benchmark,
        modes=tuple(args.modes.split(",")), out=out, limit=args.limit, quantize=args.quantize))
    print((out / "results.md").read_text())
    print(f"{len(rows)} rows written to {out}/results.{{csv,md,json,png}}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from mimolab.data.samples import make_samples

    make_samples(args.out)
    print(f"wrote samples of every data type to {args.out}")
    return 0


def _user_error(command: str, run):
    """Run ``run()``; a bad input (a missing file, a bad record or setting) ends the command with its
    message instead of a stack trace."""
    try:
        return run()
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"mimolab {command}: {err}") from None


def cmd_sft(args: argparse.Namespace) -> int:
    import json
    import logging

    from mimolab.pipeline.sft import run_sft

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = _user_error("sft", lambda: run_sft(
        args.checkpoint, args.data, args.out, lr=args.lr, steps=args.steps, epochs=args.epochs,
        row_tokens=args.row_tokens, rows_per_step=args.rows_per_step, lora_rank=args.lora_rank, freeze=args.freeze,
        merge=args.merge_lora, eval_split=args.eval_split, seed=args.seed, checkpoint_every=args.checkpoint_every,
        bf16=args.bf16, tracking=args.wandb))
    for row in result.heldout:
        print(f"held-out loss on {row['file']} ({row['n']} records): {row['before']:.3f} -> {row['after']:.3f} "
              f"(change {row['change']:+.3f}" + (f" ± {row['stderr']:.3f})" if row["stderr"] is not None else ")"))
    print(f"train loss {result.train_loss_first:.3f} -> {result.train_loss_last:.3f} over {result.steps} steps, "
          f"{result.seconds_per_step:.2f} s/step" if result.seconds_per_step else f"{result.steps} steps (done before)")
    if result.skipped:
        print("skipped records:", json.dumps(result.skipped))
    print(f"final checkpoint: {result.final}")
    return 0


def cmd_grpo(args: argparse.Namespace) -> int:
    from mimolab.eval.results import changes_table
    from mimolab.pipeline.grpo_files import run_grpo_files

    sys.path.insert(0, os.getcwd())  # 'module:function' rewards from the working directory, as python -m finds them
    overrides = {k: v for k, v in (("group_size", args.group), ("steps", args.steps), ("lora_rank", args.lora_rank),
                                   ("lr", args.lr), ("prompts_per_step", args.prompts_per_step),
                                   ("max_new_tokens", args.max_new_tokens), ("row_tokens", args.row_tokens))
                 if v is not None}
    result = _user_error("grpo", lambda: run_grpo_files(
        args.checkpoint, args.prompts, args.reward, args.out, profile=args.profile, mode=args.mode,
        eval_split=args.eval_split, merge=args.merge_lora, tracking=args.wandb, **overrides))
    if result.morl.after:
        print(changes_table(result.morl.changes))
    if result.reward_first is not None:
        print(f"training reward {result.reward_first:.3f} -> {result.reward_last:.3f} over {result.morl.steps} steps, "
              f"{result.seconds_per_step:.2f} s/step")
    print(f"final checkpoint: {result.final}")
    return 0


def cmd_pages(args: argparse.Namespace) -> int:
    from mimolab.pipeline.pages import run_pages

    result = _user_error("pages", lambda: run_pages(args.pdf, args.checkpoint, args.prompt, args.out,
                                                    batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                                    thinking=not args.no_think))
    print(f"{result.answered} page(s) answered, {result.already} already in {result.out}"
          + (f", {result.seconds_per_page:.2f} s/page" if result.seconds_per_page else "")
          + (f", skipped: {result.unreadable}" if result.unreadable else ""))
    return 0


def _add_file_commands(sub) -> None:
    wandb = dict(choices=("online", "offline", "disabled"),
                 help="W&B mode (default: WANDB_MODE, else online with an API key, else offline)")
    p = sub.add_parser("sft", help="supervised fine-tuning of a checkpoint on JSONL / parquet / saved data sets")
    p.add_argument("checkpoint", help="a Qwen2.5-VL-format directory with its tokenizer and chat template")
    p.add_argument("--data", action="append", required=True,
                   help="FILE or FILE:SHARE (token share; repeatable): .jsonl in mimolab's chat schema, .parquet, "
                        "or a save_to_disk directory")
    p.add_argument("--out", help="run directory (default $MIMOLAB_RUNS/sft/<checkpoint name>); re-run to resume")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-5; 1e-4 with LoRA)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int)
    group.add_argument("--epochs", type=float, help="passes over the files' training tokens (default 1)")
    p.add_argument("--row-tokens", type=int, default=2048, help="packed row length (longer records are cut)")
    p.add_argument("--rows-per-step", type=int, default=4)
    p.add_argument("--lora-rank", type=int, default=0, help="train peft LoRA adapters of this rank (0: full)")
    p.add_argument("--merge-lora", action="store_true", help="fold the adapters into final/'s weights")
    p.add_argument("--freeze", default="", help="parts kept frozen: vision, projector, llm (comma-separated)")
    p.add_argument("--eval-split", type=float, default=0.0, help="share of each file held out; loss before/after")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--wandb", **wandb)
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("grpo", help="GRPO on a prompt file with your rewards, scored before and after")
    p.add_argument("checkpoint")
    p.add_argument("--prompts", required=True, help="JSONL (or parquet / saved data set) of prompt records")
    p.add_argument("--reward", action="append", required=True,
                   help="verifiable | format | reward_model=DIR[:tasks] | module:function | http://host:port "
                        "(a running reward service); repeatable")
    p.add_argument("--out", help="run directory (default $MIMOLAB_RUNS/grpo/<checkpoint>-<prompts>); re-run to resume")
    p.add_argument("--profile", default="cpu", choices=PROFILES,
                   help="settings of experiments/rl/grpo_on_policy.yaml to start from")
    p.add_argument("--mode", default="on_policy", choices=("on_policy", "vanilla"))
    p.add_argument("--group", type=int, help="completions per prompt")
    p.add_argument("--steps", type=int)
    p.add_argument("--prompts-per-step", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--row-tokens", type=int, help="packed row length of the policy's forward passes")
    p.add_argument("--lr", type=float)
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--merge-lora", action="store_true")
    p.add_argument("--eval-split", type=float, default=0.0, help="share of the records held out for before/after")
    p.add_argument("--wandb", **wandb)
    p.set_defaults(func=cmd_grpo)

    p = sub.add_parser("pages", help="answer a prompt about every page of some PDFs, one JSON line per page")
    p.add_argument("pdf", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True, help="JSONL file; a re-run skips the pages already in it")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--no-think", action="store_true", help="MiMo-VL's no-think mode (an empty think block)")
    p.set_defaults(func=cmd_pages)


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
    p.add_argument("--quantize", choices=("int8", "int4", "nf4"),
                   help="the language model's linear layers in int8 (torchao, extra 'quantize'); int4/nf4 need a GPU")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("study", help="run one of the three studies (arms x seeds), results to experiments/results")
    p.add_argument("name", choices=("long_cot", "grpo_modes", "interference"))
    p.add_argument("--profile", default="cpu", choices=PROFILES[:3])
    p.add_argument("--start", help="GRPO studies: start checkpoint (default: the pipeline's stage 4)")
    p.add_argument("--out", help="results directory (default experiments/results; smoke: under the runs root)")
    p.add_argument("--wandb", choices=("online", "offline", "disabled"))
    p.add_argument("--seeds", type=int, nargs="+",
                   help="run only these of the study's seeds (curves cached); without: every seed, then the results")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("samples", help="regenerate data_samples/ (a few records of every data type)")
    p.add_argument("--out", default="data_samples")
    p.set_defaults(func=cmd_samples)
    _add_file_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
