"""MORL post-training: verifiable rewards in TRL's signature and GRPO (on-policy or vanilla) over
group rollouts from the KV-cache generator, full-parameter or LoRA."""

from mimolab.rl.grpo import GRPOConfig, group_advantages, policy_loss
from mimolab.rl.rewards import Reward, default_rewards
from mimolab.rl.trainer import GRPOTrainer

__all__ = ["GRPOConfig", "GRPOTrainer", "Reward", "default_rewards", "group_advantages", "policy_loss"]
