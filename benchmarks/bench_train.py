"""Training-step throughput of the Trainer on one device: fp32, bf16 autocast, and bf16 with activation
checkpointing, on the same initial weights and the same packed rows of the world's stage-3 mixture.

    python benchmarks/bench_train.py --preset gpu --device cuda      # the GPU options of issue 4
    python benchmarks/bench_train.py --preset smoke --steps 4         # the same code path on a laptop

Per setting: the first step's loss (the settings see the same data, so bf16 must match fp32 closely),
tokens/s and MFU (median over the steps after two warm-ups; the Trainer times the model, not the data
pipeline) and the peak memory the device allocated. Activation checkpointing trades time for memory:
expect a lower peak and fewer tokens/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile

import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.train import Trainer
from mimolab.train.stage import load_stage

SETTINGS = {"fp32": {}, "bf16": {"bf16": True}, "bf16+checkpointing": {"bf16": True, "gradient_checkpointing": True}}


def run(setting: str, args: argparse.Namespace, processor, config: MiMoVLConfig) -> dict:
    stage = dataclasses.replace(load_stage("stage3_multimodal", "cpu"), steps=args.steps, warmup_steps=1,
                                row_tokens=args.row_tokens, rows_per_step=args.rows, checkpoint_every=10**9,
                                difficulty=0.5, **SETTINGS[setting])
    torch.manual_seed(0)
    model = MiMoVL(config).to(args.device)
    sampler = world_mixture(stage.shares, processor, config, max_length=stage.row_tokens, difficulty=stage.difficulty,
                            seed=0)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        history = Trainer(model, stage, sampler, out).train(progress=False)
    timed = history[2:] or history
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None
    return {"setting": setting, "first_loss": round(history[0]["loss"], 4),
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in timed)),
            "mfu": round(statistics.median(r["mfu"] for r in timed), 4) if timed[0]["mfu"] is not None else None,
            "peak_gib": round(peak, 2) if peak is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--row-tokens", type=int, default=4096)
    parser.add_argument("--rows", type=int, default=4, help="packed rows per optimizer step")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    config = MiMoVLConfig.from_name(args.preset)
    processor = world_processor(world_tokenizer())
    results = [run(s, args, processor, config) for s in args.settings.split(",")]
    print("| setting | first loss | tokens/s | MFU | peak GiB |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['setting']} | {r['first_loss']} | {r['tokens_per_s']:,} | {r['mfu']} | {r['peak_gib']} |")
    summary = {"preset": args.preset, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "row_tokens": args.row_tokens, "rows": args.rows, "results": results}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
