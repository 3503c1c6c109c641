"""A training stage as data: which parts train, at which learning rates, on which data mixture.

MiMo-VL pre-trains in four stages (report sec. 2): 1 projector only; 2 ViT + projector with
interleaved data; 3 everything on all data types; 4 everything at 4x sequence length with far
more long chain-of-thought data. A part that is not listed in ``lr`` is frozen: no gradient, no
optimizer state, weights bit-identical after the stage.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mimolab.model.vlm import PARTS
from mimolab.settings import as_number, check_keys, check_value, load_run_file

if TYPE_CHECKING:
    from mimolab.data.world import Difficulty

@dataclass(frozen=True)
class Stage:
    name: str = "stage"
    lr: dict[str, float] = field(default_factory=lambda: {"projector": 1e-3})  # part -> peak learning rate
    shares: dict[str, float] = field(default_factory=lambda: {"caption": 1.0})  # task -> token share
    # data file -> token share, beside the world's tasks: JSONL in the chat schema, parquet, or a save_to_disk
    # directory (mimolab.data.files); the shares of tasks and files are normalised together
    data: dict[str, float] = field(default_factory=dict)
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
    # reasoning samples' replies: "long" (chain of thought, then the answer) or "short" (the answer after an empty
    # think block, as in no-think mode); the problems and images are the same either way (the long-CoT study)
    reasoning_reply: str = "long"
    checkpoint_every: int = 50
    init_from: str | None = None  # a stage name of the same run, a checkpoint directory, or None (fresh weights)
    what: str = ""  # one line: what the stage is for
    # bfloat16 autocast (float32 master weights, gradients and optimizer state): GPU tensor cores, and on a CPU
    # with AVX512-BF16 or AMX the matrix products run 2-6x faster (benchmarks/README.md, "CPU training")
    bf16: bool = False
    gradient_checkpointing: bool = False
    # torch.compile the decoder layers and ViT blocks for the training steps (MiMoVL.compile_layers): a bf16 step
    # of the cpu preset about 1.2x faster on one thread, after a compile of 10-25 s, but the main job's stage 3 (two
    # threads) no faster: off in every profile (benchmarks/README.md, "Compiled layers")
    compile: bool = False
    lora: dict[str, Any] | None = None  # {"parts": [...], "r": 8, "alpha": 16}: train adapters, not the weights
    eval_tasks: tuple[str, ...] = ()  # what the stage's notebook measures afterwards
    # "lm": next-token loss on packed rows (every MiMo-VL stage); "scene_labels": the small profiles' vision
    # warm-up (mimolab/train/vision_warmup.py), ``images_per_step`` labelled scenes per step
    objective: str = "lm"
    images_per_step: int = 32

    def __post_init__(self) -> None:
        """Refuse nonsense when the stage is made (loaded), before any step or checkpoint."""
        source = f"stage {self.name!r}"
        unknown = set(self.lr) - set(PARTS)
        if unknown:
            raise ValueError(f"{source}: unknown trainable parts {sorted(unknown)}; parts are {PARTS}")
        for part, lr in self.lr.items():
            check_value(source, f"lr.{part}", lr, above=0, high=1)  # Adam at lr > 1 is no training
        for name in ("steps", "rows_per_step", "row_tokens", "checkpoint_every", "images_per_step"):
            check_value(source, name, getattr(self, name), integer=True, low=1)
        check_value(source, "warmup_steps", self.warmup_steps, integer=True, low=0)
        check_value(source, "seed", self.seed, integer=True)
        for name in ("bf16", "gradient_checkpointing", "compile", "text_only"):
            if not isinstance(getattr(self, name), bool):  # YAML's "no" is a string, and a string is true
                raise ValueError(f"{source}: {name} must be true or false, not {getattr(self, name)!r}")
        check_value(source, "min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        check_value(source, "weight_decay", self.weight_decay, low=0)
        check_value(source, "grad_clip", self.grad_clip, above=0)
        check_tasks(source, self.shares, self.eval_tasks, self.difficulty)
        check_data(source, self.data, self.shares)
        if self.objective not in ("lm", "scene_labels"):
            raise ValueError(f"stage {self.name!r}: objective {self.objective!r}; choose 'lm' or 'scene_labels'")
        if self.reasoning_reply not in ("long", "short"):
            raise ValueError(f"stage {self.name!r}: reasoning_reply {self.reasoning_reply!r}; choose 'long' or 'short'")
        if self.loss_weighting not in ("token", "sample"):
            raise ValueError(f"stage {self.name!r}: loss_weighting {self.loss_weighting!r}; choose 'token' or 'sample'")

    @property
    def tokens_per_step(self) -> int:
        return self.row_tokens * self.rows_per_step

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The forward's precision: bfloat16 autocast on the model's device when ``bf16``, else float32.
        Matrix products run in bfloat16; norms, softmax, attention on a CPU and the losses stay float32
        (autocast's own lists, and the model upcasts them); the float32 parameters get float32 gradients.
        A CPU without bfloat16 matrix instructions trains in float32, with a warning: there bfloat16 is
        emulated, slower than float32 (the cpu profile asks for bf16, and must not slow such a laptop)."""
        if not self.bf16:
            return contextlib.nullcontext()
        if device.type == "cpu" and not cpu_has_bf16():
            warnings.warn(f"stage {self.name!r} asks for bf16, but this CPU has no bfloat16 matrix instructions "
                          "(AVX512-BF16 or AMX), where bfloat16 runs slower than float32: training in float32")
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def compiles(self, device: torch.device) -> bool:
        """Whether the training steps run compiled layers: ``compile`` asked for and inductor able to build its
        kernels here (a C++ compiler on a CPU, triton on a GPU); otherwise eager, with a warning when asked for."""
        if not self.compile:
            return False
        if not can_compile(device):
            warnings.warn(f"stage {self.name!r} asks for compile, but torch.compile cannot build kernels here "
                          f"({'no triton' if device.type == 'cuda' else 'no C++ compiler'}): training eager")
            return False
        return True

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` (step counts from 0)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def can_compile(device: torch.device) -> bool:
    """Whether inductor can build kernels for the device: triton for a GPU, a C++ compiler for a CPU."""
    import importlib.util
    import shutil

    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        return shutil.which(get_cpp_compiler()) is not None
    except Exception:  # noqa: BLE001 - inductor found no compiler it knows
        return False


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def check_tasks(source: str, shares: dict[str, float], eval_tasks: tuple[str, ...] = (),
                difficulty: Difficulty = 0.5) -> None:
    """Token shares (or sampling weights) over known world tasks, non-negative, not all zero; eval
    tasks known; difficulties in [0, 1]. An eval-task typo must fail now, not after training."""
    from mimolab.data.world import TASKS, task_difficulty

    unknown = sorted((set(shares) | set(eval_tasks)) - set(TASKS))
    if unknown:
        raise ValueError(f"{source}: unknown tasks {unknown}; tasks are {sorted(TASKS)}")
    for task, share in shares.items():
        check_value(source, f"share of {task}", share, low=0)
    if shares and not sum(shares.values()) > 0:
        raise ValueError(f"{source}: the token shares sum to 0; give some task a positive share")
    for task in set(shares) | set(eval_tasks):
        check_value(source, f"difficulty of {task}", task_difficulty(difficulty, task), low=0, high=1)


def check_data(source: str, data: dict[str, float], shares: dict[str, float]) -> None:
    """Data files that exist and are readable kinds, non-negative shares, and some positive share in
    all (a stage with no world task and no file trains on nothing)."""
    from mimolab.data.files import file_kind

    for path, share in data.items():
        check_value(source, f"share of {path}", share, low=0)
        file_kind(path)  # names a missing file or an unknown kind now, not after the first steps
    if not sum(shares.values()) + sum(data.values()) > 0:
        raise ValueError(f"{source}: no positive token share: give a world task (shares) or a data file (data) one")


def load_stage(name_or_path: str | Path, profile: str, **overrides: Any) -> Stage:
    """A stage from its YAML file (``experiments/pretrain/<name>.yaml`` or a path) at ``profile``.

    The file's top-level keys are the defaults; ``profiles.<profile>`` overrides them. ``tokens``
    (a token budget) may stand in for ``steps``: steps = tokens / (row_tokens * rows_per_step).
    """
    try:
        spec = load_run_file("pretrain", name_or_path, profile, **overrides)
    except KeyError as err:
        raise KeyError(f"stage {err.args[0]}") from None
    tokens = spec.pop("tokens", None)
    check_keys(spec, Stage, f"stage {spec['name']!r}")
    if tokens is not None and "steps" not in spec:
        per_step = spec.get("row_tokens", Stage.row_tokens) * spec.get("rows_per_step", Stage.rows_per_step)
        spec["steps"] = max(1, round(float(tokens) / per_step))
    spec["lr"] = {k: as_number(v) for k, v in spec.get("lr", {}).items()}
    if "eval_tasks" in spec:
        spec["eval_tasks"] = tuple(spec["eval_tasks"])
    return Stage(**spec)
