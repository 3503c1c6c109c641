"""GRPO probe: on-policy GRPO from a pre-training checkpoint (default: the cpu pipeline's stage 4)
for a number of steps, with held-out scores before and after. Notebook 08 walks through the same
run; this is the terminal version behind the numbers in the notes.

    python benchmarks/probe_grpo.py --steps 30 --tasks counting,gui,grounding,video
"""

from __future__ import annotations

import argparse
import json
import time

from mimolab import MiMoVL
from mimolab.eval import evaluate
from mimolab.processing import MiMoVLProcessor
from mimolab.rl import GRPOTrainer
from mimolab.rl.grpo import LOSS_AGGREGATIONS, load_grpo_config
from mimolab.train.pretrain import default_run_dir


def scores(model, processor, tasks, difficulty, n):
    return {r.task: [round(r.score, 3), round(r.stderr, 3), round(r.chance, 3)]
            for r in evaluate(model, processor, tasks, n=n, difficulty=difficulty, progress=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(default_run_dir("cpu") / "stage4_long_context" / "final"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tasks", default="counting,gui,grounding,video")
    parser.add_argument("--out", default="runs/probe_grpo")
    parser.add_argument("--n", type=int, default=100, help="held-out samples per task, before and after")
    parser.add_argument("--lr", type=float, help="learning rate (default: the cpu profile's)")
    parser.add_argument("--prompts", type=int, help="prompts per step (default: the cpu profile's)")
    parser.add_argument("--group", type=int, help="completions per prompt (default: the cpu profile's)")
    parser.add_argument("--temperature", type=float, help="rollout temperature (default: the cpu profile's)")
    parser.add_argument("--loss-agg", choices=LOSS_AGGREGATIONS, help="(default: the cpu profile's)")
    args = parser.parse_args()
    model, processor = MiMoVL.from_pretrained(args.checkpoint), MiMoVLProcessor.from_pretrained(args.checkpoint)
    extra = {key: value for key, value in (("lr", args.lr), ("prompts_per_step", args.prompts),
                                           ("group_size", args.group), ("temperature", args.temperature),
                                           ("loss_agg", args.loss_agg))
             if value is not None}
    cfg = load_grpo_config("grpo_on_policy", "cpu", steps=args.steps, tasks={t: 1.0 for t in args.tasks.split(",")}, **extra)
    tasks = [t for t, _ in cfg.tasks]
    print("before (score, s.e., chance):", scores(model, processor, tasks, cfg.difficulty, args.n))
    trainer = GRPOTrainer(model, processor, cfg, args.out)
    start = time.time()
    history = trainer.train(progress=True)
    trainer.close()
    mean = lambda rows, key: round(sum(r[key] for r in rows) / len(rows), 3)  # noqa: E731
    print(json.dumps({"minutes": round((time.time() - start) / 60, 1), "reward_first_10": mean(history[:10], "reward"),
                      "reward_last_10": mean(history[-10:], "reward"), "kl_ref_last": history[-1].get("kl_ref"),
                      "max_first_update_ratio_dev": max(r.get("first_update/ratio_max_dev", 0.0) for r in history)}))
    print("after (score, s.e., chance):", scores(model, processor, tasks, cfg.difficulty, args.n))


if __name__ == "__main__":  # the reward workers are spawned processes
    main()
