"""Rollout-path probe: the same samples answered through GRPO's rollout path (GRPOTrainer.rollout at a
near-zero temperature) and through the evaluation's greedy path (generate_replies), scored alike. Equal
replies mean RL trains on the prompts the evaluation scores.

    python benchmarks/probe_rollout_path.py runs/cpu/pretrain/stage4_long_context/final counting 64
    python benchmarks/probe_rollout_path.py CHECKPOINT counting 128 2000000   # RL's own prompt indices
"""

import sys

from mimolab.data.world import generate as world_sample
from mimolab.eval.harness import HELD_OUT, generate_replies, with_view_size
from mimolab.eval.metrics import score
from mimolab.model.vlm import MiMoVL
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import GRPOConfig
from mimolab.rl.trainer import GRPOTrainer

if __name__ == "__main__":  # the reward workers are spawned processes
    checkpoint, task, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    base = int(sys.argv[4]) if len(sys.argv) > 4 else HELD_OUT
    difficulty = {"grounding": 0.1, "counting": 0.1, "visual_math": 0.1}.get(task, 0.0)  # the cpu profile's
    model, processor = MiMoVL.from_pretrained(checkpoint), MiMoVLProcessor.from_pretrained(checkpoint)
    samples = [world_sample(task, base + i, seed=0, difficulty=difficulty) for i in range(n)]
    answers = [with_view_size(s, processor) for s in samples]
    evaluated = generate_replies(model, processor, samples)
    cfg = GRPOConfig(tasks=((task, 1.0),), group_size=2, temperature=1e-3, max_new_tokens=40, prompts_per_step=n)
    rolled = [group[0].text for group in GRPOTrainer(model, processor, cfg, "runs/probe_rollout_path", rewards=[]).rollout(samples)]
    mean = lambda replies: sum(score(task, r, a, s.reply) for r, a, s in zip(replies, answers, samples)) / n  # noqa: E731
    print(f"{task}: evaluation path {mean(evaluated):.3f}, rollout path {mean(rolled):.3f}, "
          f"identical replies {sum(a == b for a, b in zip(evaluated, rolled))}/{n}")
