"""A training stage as data: which parts train, at which learning rates, on which data mixture.

MiMo-VL pre-trains in four stages (report sec. 2): 1 projector only; 2 ViT + projector with
interleaved data; 3 everything on all data types; 4 everything at 4x sequence length with far
more long chain-of-thought data. A part that is not listed in ``lr`` is frozen: no gradient, no
optimizer state, weights bit-identical after the stage.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mimolab.data.world import Difficulty

PARTS = ("vision", "projector", "llm")
STAGE_DIR = Path(__file__).resolve().parents[2] / "experiments" / "pretrain"


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
    # "token": every target token of the step weighs the same (MiMo-VL, LLaVA); "sample": every sample
    # weighs the same, its tokens sharing its weight, so a one-token count is not outweighed by a caption
    loss_weighting: str = "token"
    seed: int = 0
    difficulty: Difficulty = 0.5  # one number, or per task: {"default": 0.0, "counting": 0.2}
    text_only: bool = False  # drop images and videos (stage 0: the language model alone)
    checkpoint_every: int = 50
    init_from: str | None = None  # a stage name of the same run, a checkpoint directory, or None (fresh weights)
    what: str = ""  # one line: what the stage is for
    bf16: bool = False  # autocast on GPU
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None  # {"parts": [...], "r": 8, "alpha": 16}: train adapters, not the weights
    eval_tasks: tuple[str, ...] = ()  # what the stage's notebook measures afterwards
    # "lm": next-token loss on packed rows (every MiMo-VL stage); "scene_labels": the small profiles' vision
    # warm-up (mimolab/train/vision_warmup.py), ``images_per_step`` labelled scenes per step
    objective: str = "lm"
    images_per_step: int = 32

    def __post_init__(self) -> None:
        unknown = set(self.lr) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable parts {sorted(unknown)}; parts are {PARTS}")
        if self.steps < 1 or self.rows_per_step < 1 or self.row_tokens < 1:
            raise ValueError(f"stage {self.name!r}: steps, rows_per_step and row_tokens must be positive")
        if self.objective not in ("lm", "scene_labels"):
            raise ValueError(f"stage {self.name!r}: objective {self.objective!r}; choose 'lm' or 'scene_labels'")
        if self.loss_weighting not in ("token", "sample"):
            raise ValueError(f"stage {self.name!r}: loss_weighting {self.loss_weighting!r}; choose 'token' or 'sample'")

    @property
    def tokens_per_step(self) -> int:
        return self.row_tokens * self.rows_per_step

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


def load_profiled_yaml(path: Path, profile: str, **overrides: Any) -> dict:
    """A run file's settings at ``profile``: top-level keys are defaults, ``profiles.<profile>`` overrides them."""
    spec = yaml.safe_load(path.read_text())
    per_profile = spec.pop("profiles", {}) or {}
    if profile not in per_profile:
        raise KeyError(f"{path.stem!r} has no settings for profile {profile!r}; it has {sorted(per_profile)}")
    return {**spec, **(per_profile[profile] or {}), **overrides}


def check_keys(spec: dict, cls: type, source: str) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; a {cls.__name__} has {sorted(fields)}")


def load_stage(name_or_path: str | Path, profile: str, **overrides: Any) -> Stage:
    """A stage from its YAML file (``experiments/pretrain/<name>.yaml`` or a path) at ``profile``.

    The file's top-level keys are the defaults; ``profiles.<profile>`` overrides them. ``tokens``
    (a token budget) may stand in for ``steps``: steps = tokens / (row_tokens * rows_per_step).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = STAGE_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in STAGE_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no stage file {path}; stages under {STAGE_DIR}: {known}")
    try:
        spec = load_profiled_yaml(path, profile, **overrides)
    except KeyError as err:
        raise KeyError(f"stage {err.args[0]}") from None
    spec.setdefault("name", path.stem)
    tokens = spec.pop("tokens", None)
    check_keys(spec, Stage, path.name)
    if tokens is not None and "steps" not in spec:
        per_step = spec.get("row_tokens", Stage.row_tokens) * spec.get("rows_per_step", Stage.rows_per_step)
        spec["steps"] = max(1, round(float(tokens) / per_step))
    spec["lr"] = {k: float(v) for k, v in spec.get("lr", {}).items()}
    if "eval_tasks" in spec:
        spec["eval_tasks"] = tuple(spec["eval_tasks"])
    return Stage(**spec)
