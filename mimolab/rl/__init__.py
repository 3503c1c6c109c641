"""MORL post-training: verifiable rewards (and, to come, reward models, the reward service, GRPO)."""

from mimolab.rl.rewards import Reward, default_rewards

__all__ = ["Reward", "default_rewards"]
