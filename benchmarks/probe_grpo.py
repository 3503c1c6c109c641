"""GRPO probe: MORL (``mimolab.pipeline.run_morl``: GRPO with held-out scores before and after, paired)
from a pre-training checkpoint (default: the cpu pipeline's stage 4) with the cpu profile's settings
overridden from the command line. The numbers recorded in experiments/rl/grpo_on_policy.yaml come
from runs of this script; notebook 08 walks through the same loop.

    python benchmarks/probe_grpo.py --steps 100 --tasks grounding,gui --lora-rank 16 --lr 1e-3 \
        --prompts 16 --group 8 --temperature 1 --n 200 --out runs/probe_grpo/lora
    python benchmarks/probe_grpo.py --tasks text_reasoning:3,gui:2,chart:2 --lr 1e-4 --temperature 0.7

``--tasks`` takes ``task`` or ``task:weight`` (default weight 1). A finished ``--out`` is read back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mimolab.rl.grpo import LOSS_AGGREGATIONS
from mimolab.pipeline import default_run_dir, run_morl
from mimolab.train.tracking import read_metrics


def parse_tasks(text: str) -> dict[str, float]:
    """``"grounding:2,gui"`` -> ``{"grounding": 2.0, "gui": 1.0}``."""
    return {task: float(weight or 1) for task, _, weight in (item.partition(":") for item in text.split(","))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(default_run_dir("cpu") / "stage4_long_context" / "final"))
    parser.add_argument("--out", default="runs/probe_grpo")
    parser.add_argument("--n", type=int, default=100, help="held-out samples per task, before and after")
    parser.add_argument("--tasks", help="task or task:weight, comma-separated (default: the cpu profile's)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--prompts", type=int, dest="prompts_per_step")
    parser.add_argument("--group", type=int, dest="group_size")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--loss-agg", choices=LOSS_AGGREGATIONS)
    parser.add_argument("--rollout-dtype", choices=["bfloat16"], help="rollouts (prefill and decode) in bf16")
    parser.add_argument("--bf16", action="store_true", default=None, help="the update's forward under bf16 autocast")
    parser.add_argument("--lora-rank", type=int, help="0: full-parameter")
    parser.add_argument("--lora-alpha", type=int)
    parser.add_argument("--seed", type=int, help="another seed draws other training prompts, rollouts and held-out samples")
    args = vars(parser.parse_args())
    checkpoint, out, n = args.pop("checkpoint"), Path(args.pop("out")), args.pop("n")
    overrides = {key: value for key, value in args.items() if value is not None}  # unset: the cpu profile's
    if "tasks" in overrides:
        overrides["tasks"] = parse_tasks(overrides["tasks"])
    result = run_morl("cpu", checkpoint, out, tracking="disabled", eval_n=n, **overrides)
    history = read_metrics(out, key="reward")
    mean = lambda rows, key: round(sum(r.get(key) or 0.0 for r in rows) / len(rows), 3)  # noqa: E731
    print(json.dumps({"reward_first_10": mean(history[:10], "reward"), "reward_last_10": mean(history[-10:], "reward"),
                      "kl_ref_last": history[-1].get("kl_ref"),
                      "max_first_update_ratio_dev": max(r.get("first_update/ratio_max_dev") or 0.0 for r in history)}))
    for c in result.changes:
        print(f"{c.task:15s} {c.before:.3f} -> {c.after:.3f}  {c.change:+.3f} ± {c.stderr:.3f}  z {c.z:.2f}")


if __name__ == "__main__":  # the reward workers are spawned processes
    main()
