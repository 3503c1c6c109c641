"""Do MORL's rewards score what the held-out evaluation scores? Greedy replies of a checkpoint to
held-out samples of each task, scored by the evaluation metric and by the reward router; prints the
means and the samples where the two differ (grounding and gui box answers differ by design: the
reward gives GIoU partial credit where the metric counts F1@0.5 or a hit).

    python benchmarks/probe_reward_agreement.py --tasks visual_math,chart,counting,gui,grounding,video,text_reasoning
"""

from __future__ import annotations

import argparse

from mimolab import MiMoVL
from mimolab.eval.harness import generate_replies, held_out, with_view_size
from mimolab.eval.metrics import score
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import load_grpo_config
from mimolab.rl.rewards import default_rewards
from mimolab.rl.service import RewardRouter
from mimolab.rl.trainer import reward_columns
from mimolab.pipeline import default_run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(default_run_dir("cpu") / "stage4_long_context" / "final"))
    parser.add_argument("--tasks", default="visual_math,chart,counting,gui,grounding,video,text_reasoning")
    parser.add_argument("--n", type=int, default=60)
    args = parser.parse_args()
    difficulty = load_grpo_config("grpo_on_policy", "cpu").difficulty  # the samples MORL trains and scores
    model, processor = MiMoVL.from_pretrained(args.checkpoint), MiMoVLProcessor.from_pretrained(args.checkpoint)
    router = RewardRouter(default_rewards())
    try:
        for task in args.tasks.split(","):
            samples = held_out(task, args.n, difficulty=difficulty)
            replies = generate_replies(model, processor, samples)
            metric = [score(task, r, with_view_size(s, processor), s.reply) for r, s in zip(replies, samples)]
            reward = router.score(replies, **reward_columns(samples)).total
            differ = [i for i, (m, r) in enumerate(zip(metric, reward)) if abs(m - r) > 1e-6]
            print(f"{task}: metric {sum(metric) / len(metric):.3f}, reward {sum(reward) / len(reward):.3f}, "
                  f"differ on {len(differ)}/{len(samples)}")
            for i in differ[:3]:
                print(f"    {replies[i][-100:]!r} | reference {samples[i].reply[-60:]!r} | metric {metric[i]} reward {reward[i]:.3f}")
    finally:
        router.close()


if __name__ == "__main__":  # the reward workers are spawned processes
    main()
