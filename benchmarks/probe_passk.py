"""How much an RL task's samples know beyond its greedy answer: per task, the greedy score, and over
k samples at temperature T the mean score (mean@k) and the best one (pass@k), on held-out samples.
GRPO learns only from groups with spread, so pass@k far above greedy is the signal it can use.

    python benchmarks/probe_passk.py runs/cpu/pretrain/stage4_long_context/final --tasks gui,chart --k 8 --temperature 1.0
"""

from __future__ import annotations

import argparse

from mimolab.eval.harness import generate_replies, held_out, with_view_size
from mimolab.eval.metrics import score
from mimolab.model.vlm import MiMoVL
from mimolab.processing import MiMoVLProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--tasks", default="text_reasoning,chart,gui")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--difficulty", type=float, default=0.0)
    args = parser.parse_args()
    model, processor = MiMoVL.from_pretrained(args.checkpoint), MiMoVLProcessor.from_pretrained(args.checkpoint)
    for task in args.tasks.split(","):
        samples = held_out(task, args.n, difficulty=args.difficulty)
        answers = [with_view_size(s, processor) for s in samples]

        def scores(replies: list[str]) -> list[float]:
            return [score(task, r, a, s.reply) for r, a, s in zip(replies, answers, samples)]

        greedy = scores(generate_replies(model, processor, samples))
        sampled = [scores(generate_replies(model, processor, samples, sampling={"temperature": args.temperature}, seed=j))
                   for j in range(args.k)]
        per_sample = list(zip(*sampled))
        mean_k = sum(sum(x) / args.k for x in per_sample) / args.n
        pass_k = sum(max(x) for x in per_sample) / args.n
        print(f"{task:15s} greedy {sum(greedy) / args.n:.2f}  mean@{args.k} {mean_k:.2f}  pass@{args.k} {pass_k:.2f}")


if __name__ == "__main__":
    main()
