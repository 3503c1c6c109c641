"""GRPO, on-policy as MiMo-VL runs it, or vanilla with PPO clipping: the math and the rollout.

One step: draw prompts (by per-task weight), sample ``group_size`` completions of each with the
KV-cache generator (which returns each token's log-probability under softmax(logits / T)), score
them with the rewards, and turn rewards into advantages within each group:
``(reward - group mean) / group std``. Groups whose reward spread is below ``min_group_std`` are
dropped (dynamic sampling; the spread, not the mean, because GIoU and reward-model scores are
continuous). Then ``updates_per_batch`` gradient steps on the clipped surrogate:

- on-policy (MiMo-VL): one update per rollout batch, so the importance ratio is exactly 1 and
  clipping never binds; no KL term;
- vanilla: several updates on the same batch, ratios drift from 1, PPO clipping binds, an
  optional KL to the reference policy (k3 estimator) joins the loss.

The loss is aggregated as a token mean over the whole batch (MiMo-VL), a mean of per-sequence
means, or a constant normaliser (tokens / (sequences x max_new_tokens)), so the effect of the
aggregation on response length can be studied. Whatever the loss, the KL to the reference is
measured and logged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mimolab.data.packing import TokenizedSample
from mimolab.data.tokenize import make_sample
from mimolab.settings import as_number, check_keys, check_value, load_run_file
from mimolab.train.stage import check_tasks

if TYPE_CHECKING:
    from mimolab.data.world import Difficulty

LOSS_AGGREGATIONS = ("token_mean", "seq_mean", "constant")
ROLLOUT_DTYPES = (None, "bfloat16")


@dataclass(frozen=True)
class GRPOConfig:
    tasks: tuple[tuple[str, float], ...] = (("counting", 1.0),)  # (task, sampling weight)
    steps: int = 20
    prompts_per_step: int = 4
    group_size: int = 4
    updates_per_batch: int = 1  # 1: on-policy; >1: vanilla GRPO
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    # at kl_coef 0 the reference policy's forward only measures the KL to the start (logged as kl_ref): every
    # kl_every steps (0: never, as TRL at beta 0); the update is the same whichever, a forward less per skipped step
    kl_every: int = 1
    loss_agg: str = "token_mean"
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    min_group_std: float = 0.0
    lr: float = 1e-4
    grad_clip: float = 1.0
    row_tokens: int = 2048
    difficulty: Difficulty = 0.3  # one number, or per task (see mimolab.data.world)
    seed: int = 0
    lora_rank: int = 0  # 0: full-parameter RL; > 0: peft LoRA adapters of this rank on lora_parts, the rest frozen
    lora_alpha: int = 16
    lora_parts: tuple[str, ...] = ("llm",)  # see mimolab.train.lora.LORA_TARGETS
    checkpoint_every: int = 10  # steps between checkpoints in pipeline runs (0: only at the end)
    # rollouts' matmul dtype (None: the model's; log-probs equal the update's forward, the ratio is exactly 1).
    # "bfloat16": prefill and decoding steps in bf16 (faster on CPUs with bf16 units); the old log-probs are then
    # the first update's own (training dtype, detached) and the sampler's distance from them is logged
    rollout_dtype: str | None = None
    # the update's forward (and the reference's) under bfloat16 autocast, float32 weights and optimizer (as a
    # pre-training Stage's bf16); the old log-probs are then the first update's own, as with rollout_dtype
    bf16: bool = False

    def __post_init__(self) -> None:
        """Refuse nonsense when the config is made (loaded), before any rollout or checkpoint."""
        if self.loss_agg not in LOSS_AGGREGATIONS:
            raise ValueError(f"loss_agg {self.loss_agg!r}: choose one of {LOSS_AGGREGATIONS}")
        if self.rollout_dtype not in ROLLOUT_DTYPES:
            raise ValueError(f"rollout_dtype {self.rollout_dtype!r}: choose one of {ROLLOUT_DTYPES}")
        if isinstance(self.group_size, int) and self.group_size < 2:
            raise ValueError("group_size must be at least 2: advantages compare completions of one prompt")
        source = "GRPO config"
        for name in ("steps", "prompts_per_step", "group_size", "updates_per_batch", "max_new_tokens", "row_tokens"):
            check_value(source, name, getattr(self, name), integer=True, low=1)
        for name in ("lora_rank", "checkpoint_every", "kl_every"):
            check_value(source, name, getattr(self, name), integer=True, low=0)
        check_value(source, "seed", self.seed, integer=True)
        check_value(source, "lr", self.lr, above=0, high=1)
        check_value(source, "grad_clip", self.grad_clip, above=0)
        check_value(source, "clip_eps", self.clip_eps, above=0)
        check_value(source, "kl_coef", self.kl_coef, low=0)
        check_value(source, "temperature", self.temperature, above=0)
        check_value(source, "top_p", self.top_p, above=0, high=1)
        check_value(source, "min_group_std", self.min_group_std, low=0)
        check_value(source, "lora_alpha", self.lora_alpha, above=0)
        check_tasks(source, dict(self.tasks), (), self.difficulty)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(P, G) rewards -> (P, G) advantages: reward minus its group's mean, over the group's std."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def policy_loss(logprobs: list[torch.Tensor], old_logprobs: list[torch.Tensor], advantages: torch.Tensor,
                cfg: GRPOConfig, ref_logprobs: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate over completions of different lengths (one tensor of token log-probs each)."""
    per_seq, ratios, clipped, kls = [], [], [], []
    for logp, old, adv in zip(logprobs, old_logprobs, advantages.tolist()):
        ratio = torch.exp(logp - old)
        surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
        token_loss = -surrogate
        if ref_logprobs is not None:
            ref = ref_logprobs[len(per_seq)]
            kl = torch.exp(ref - logp) - (ref - logp) - 1  # k3: unbiased, always >= 0
            kls.append(kl.detach())
            if cfg.kl_coef:
                token_loss = token_loss + cfg.kl_coef * kl
        per_seq.append(token_loss)
        ratios.append(ratio.detach())
        clipped.append(((ratio - 1).abs() > cfg.clip_eps).detach())
    n_tokens = sum(t.numel() for t in per_seq)
    if cfg.loss_agg == "token_mean":  # MiMo-VL: every token of the batch weighs the same
        loss = sum(t.sum() for t in per_seq) / max(1, n_tokens)
    elif cfg.loss_agg == "seq_mean":  # every sequence weighs the same, whatever its length
        loss = sum(t.mean() for t in per_seq if t.numel()) / max(1, len(per_seq))
    else:  # a constant normaliser: longer answers carry proportionally more weight
        loss = sum(t.sum() for t in per_seq) / (len(per_seq) * cfg.max_new_tokens)
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0)  # noqa: E731
    stats = {"ratio_mean": float(cat(ratios).mean()) if n_tokens else 1.0,
             "ratio_max_dev": float((cat(ratios) - 1).abs().max()) if n_tokens else 0.0,
             "clip_fraction": float(cat(clipped).float().mean()) if n_tokens else 0.0,
             **({"kl_ref": float(cat(kls).mean())} if kls else {})}
    return loss, stats


@dataclass
class Rollout:
    sample: object  # the world Sample (task, answer, reply)
    prompt: TokenizedSample  # the prompt, tokenised with its images (labels all -100)
    tokens: list[int]  # the completion (stop token included)
    logprobs: list[float]  # from the generator, under softmax(logits / T)
    text: str
    finish_reason: str

    def training_sample(self, config) -> TokenizedSample:
        """Prompt + completion with the completion as the only targets, and its 3D positions."""
        p = self.prompt
        vis = {}
        if p.pixel_values is not None:
            vis.update(pixel_values=p.pixel_values, image_grid_thw=torch.tensor(p.image_grid_thw))
        if p.pixel_values_videos is not None:
            vis.update(pixel_values_videos=p.pixel_values_videos, video_grid_thw=torch.tensor(p.video_grid_thw),
                       second_per_grid_ts=torch.tensor(p.second_per_grid_ts))
        ids = p.input_ids + self.tokens
        return make_sample(ids, [-100] * len(p.input_ids) + self.tokens, vis, config, p.task)


def load_grpo_config(name_or_path: str | Path, profile: str, **overrides) -> GRPOConfig:
    """A GRPO run from ``experiments/rl/<name>.yaml`` (or a YAML path) at ``profile`` (same layout as the stages)."""
    spec = load_run_file("rl", name_or_path, profile, **overrides)
    source = f"GRPO file {spec.pop('name')!r}"
    spec.pop("what", None)
    check_keys(spec, GRPOConfig, source)
    for f in dataclasses.fields(GRPOConfig):
        if f.type == "float" and f.name in spec:
            spec[f.name] = as_number(spec[f.name])
    if isinstance(spec.get("lora_parts"), list):
        spec["lora_parts"] = tuple(spec["lora_parts"])
    if isinstance(spec.get("tasks"), dict):
        spec["tasks"] = tuple((task, float(w)) for task, w in spec["tasks"].items())
    return GRPOConfig(**spec)
