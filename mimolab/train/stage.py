"""A training stage as data: which parts train, at which learning rates, on which data mixture.

MiMo-VL pre-trains in four stages (report sec. 2): 1 projector only; 2 ViT + projector with
interleaved data; 3 everything on all data types; 4 everything at 4x sequence length with far
more long chain-of-thought data. A part that is not listed in ``lr`` is frozen: no gradient, no
optimizer state, weights bit-identical after the stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PARTS = ("vision", "projector", "llm")


@dataclass(frozen=True)
class Stage:
    name: str = "stage"
    lr: dict[str, float] = field(default_factory=lambda: {"projector": 1e-3})  # part -> peak learning rate
    shares: dict[str, float] = field(default_factory=lambda: {"caption": 1.0})  # task -> token share
    steps: int = 100
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decay to this fraction of the peak
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    row_tokens: int = 1024  # packed row length (the sequence length)
    rows_per_step: int = 4  # packed rows per optimizer step (micro-batches, accumulated)
    seed: int = 0
    difficulty: float = 0.5
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        unknown = set(self.lr) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable parts {sorted(unknown)}; parts are {PARTS}")

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` (step counts from 0)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def part_of(param_name: str) -> str:
    """Which part of MiMoVL a parameter belongs to (the projector lives at visual.merger)."""
    if param_name.startswith("visual.merger."):
        return "projector"
    if param_name.startswith("visual."):
        return "vision"
    return "llm"
