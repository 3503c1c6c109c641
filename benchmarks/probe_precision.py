"""Does a stage learn the same under bf16 autocast as in fp32? Per seed, one stage's cpu settings run twice from the
same start checkpoint on the same data stream, once in fp32 and once with ``bf16: true``; both models are then
scored on the same held-out samples, and the per-sample differences (bf16 - fp32) give each task's paired change
(``mimolab.eval.paired_change``). Pooled over seeds: the mean of all per-sample differences with its standard
error, and the mean of the seeds' changes with the standard error across seeds (the training noise between runs).

    OMP_NUM_THREADS=1 python benchmarks/probe_precision.py --init runs/cpu/pretrain/stage2_alignment/final \\
        --stage stage3_multimodal --steps 200 --seeds 0,1,2 --train-tasks counting,grounding,chart,ocr \\
        --tasks counting,grounding,chart,ocr --n 100 --json benchmarks/results/cpu_bf16_learning.json

Also per run: the first and last training losses (the two arms see the same rows, so the first losses differ by
bf16 rounding alone) and the training tokens/s (wall clock and CPU time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import torch

from mimolab import MiMoVL
from mimolab.settings import relative_to_runs
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.eval import evaluate
from mimolab.eval.results import mean_stderr, paired_change
from mimolab.train import Trainer
from mimolab.train.stage import load_stage


def train_and_score(args, processor, seed: int, bf16: bool) -> dict:
    """One arm: the stage from the start checkpoint at this seed and precision, then its held-out scores."""
    stage = dataclasses.replace(load_stage(args.stage, "cpu"), steps=args.steps, seed=seed, bf16=bf16,
                                checkpoint_every=10**9, init_from=None)
    if args.train_tasks:  # equal token shares of these tasks instead of the stage's mixture
        stage = dataclasses.replace(stage, shares={t: 1.0 for t in args.train_tasks.split(",")})
    torch.manual_seed(seed)
    model = MiMoVL.from_pretrained(args.init)
    sampler = world_mixture(stage.shares, processor, model.config, max_length=stage.row_tokens,
                            difficulty=stage.difficulty, seed=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as run_dir:
        history = Trainer(model, stage, sampler, run_dir).train(progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(r["tokens"] for r in history)
    scores = evaluate(model, processor, args.tasks, n=args.n, seed=seed, difficulty=stage.difficulty, progress=False)
    return {"first_losses": [round(r["loss"], 5) for r in history[:3]],
            "last_20_loss": round(statistics.mean(r["loss"] for r in history[-20:]), 4),
            "tokens_per_s": round(tokens / wall), "cpu_tokens_per_s": round(tokens / cpu), "scores": scores}


def pooled(changes: dict[int, list]) -> dict:
    """Per task: the per-sample differences of every seed pooled, and the seeds' changes averaged."""
    out = {}
    for task in (c["task"] for c in next(iter(changes.values()))):
        diffs, per_seed = [], []
        for seed_changes in changes.values():
            c = next(c for c in seed_changes if c["task"] == task)
            diffs += c["differences"]
            per_seed.append(c["change"])
        mean, stderr = mean_stderr(diffs)
        seed_se = statistics.stdev(per_seed) / len(per_seed) ** 0.5 if len(per_seed) > 1 else None
        out[task] = {"change": round(mean, 4), "stderr": round(stderr, 4), "n": len(diffs),
                     "seed_mean": round(statistics.mean(per_seed), 4),
                     "seed_stderr": round(seed_se, 4) if seed_se is not None else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", required=True, help="the start checkpoint (a stage's final directory)")
    parser.add_argument("--stage", default="stage3_multimodal", help="whose cpu settings train")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train-tasks", help="train on these tasks, equal shares (default: the stage's mixture)")
    parser.add_argument("--tasks", default="counting,grounding,chart,ocr", help="the held-out tasks scored")
    parser.add_argument("--n", type=int, default=100, help="held-out samples per task and seed")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    args.tasks = args.tasks.split(",")
    processor = world_processor(world_tokenizer())
    runs, changes = {}, {}
    for seed in map(int, args.seeds.split(",")):
        fp32, bf16 = (train_and_score(args, processor, seed, bf16) for bf16 in (False, True))
        changes[seed] = []
        for before, after in zip(fp32.pop("scores"), bf16.pop("scores")):
            c = paired_change(before, after)
            changes[seed].append({"task": c.task, "fp32": round(c.before, 4), "bf16": round(c.after, 4),
                                  "change": round(c.change, 4), "stderr": round(c.stderr, 4), "n": c.n,
                                  "differences": [b - a for a, b in zip(before.per_sample, after.per_sample)]})
        runs[seed] = {"fp32": fp32, "bf16": bf16}
        print(json.dumps({"seed": seed, **runs[seed], "changes": [{k: v for k, v in c.items() if k != "differences"}
                                                                   for c in changes[seed]]}))
    summary = {"init": relative_to_runs(args.init), "stage": args.stage, "steps": args.steps, "train_tasks": args.train_tasks,
               "tasks": args.tasks, "n": args.n,
               "runs": runs, "changes": changes, "pooled": pooled(changes)}
    print("| task | bf16 - fp32 (pooled per sample) | s.e. | n | mean of seeds | s.e. across seeds |")
    print("|---|---|---|---|---|---|")
    for task, p in summary["pooled"].items():
        print(f"| {task} | {p['change']:+.4f} | {p['stderr']:.4f} | {p['n']} | {p['seed_mean']:+.4f} "
              f"| {p['seed_stderr']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
