"""Run tracking: ``metrics.jsonl`` always, W&B through the official client when it is on, and the
MFU estimate the logs report.

W&B's mode is resolved explicitly, because on these machines an unset mode fails at once without
a key and hangs for ~100 s with a key and no network: a requested mode wins, then ``WANDB_MODE``,
then ``online`` when an API key is configured, else ``offline`` (sync later with ``wandb sync``).

MFU: training FLOPs per token ~= 6 x (non-embedding parameters) + 12 x layers x width x sequence
(the attention scores; PaLM, appendix B), divided by the device's peak. On CUDA the peak is the
datasheet's dense number; on CPU it is a measured float32 matmul throughput, so CPU MFU is
relative to what this machine's matmul reaches, not a datasheet.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

MODES = ("online", "offline", "disabled")


def wandb_mode(requested: str | None = None) -> str:
    """'online' | 'offline' | 'disabled' (see the module docstring for the order)."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode is not None:
        mode = {"off": "disabled", "dryrun": "offline"}.get(mode, mode)
        if mode not in MODES:
            raise ValueError(f"unknown W&B mode {mode!r} (WANDB_MODE or argument); choose one of {MODES}")
        return mode
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _plain(value: Any) -> Any:
    """JSON-safe: tensors to numbers, nan/inf to None."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    """``metrics.jsonl`` (+ tables/, summary.json) in ``run_dir``, mirrored to W&B unless disabled."""

    def __init__(self, run_dir: str | Path, config: dict | None = None, *, project: str = "mimolab",
                 name: str | None = None, group: str | None = None, mode: str | None = None,
                 tags: list[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = wandb_mode(mode)
        self.run = None
        self.wandb_dir: Path | None = None
        if self.mode != "disabled":
            import wandb

            self.run = wandb.init(project=project, name=name, group=group, tags=tags, config=config or {},
                                  dir=str(self.run_dir), mode=self.mode, reinit="finish_previous")
            self.wandb_dir = Path(self.run.dir).parent
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")

    def log(self, record: dict, step: int | None = None) -> None:
        record = {k: _plain(v) for k, v in record.items()}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if v is not None}, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        (self.run_dir / "tables").mkdir(exist_ok=True)
        with open(self.run_dir / "tables" / f"{key.replace('/', '_')}.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(dict(zip(columns, map(_plain, row)))) + "\n")
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def log_image(self, key: str, image: Any) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(image) if isinstance(image, Path) else image)})

    def summary(self, values: dict) -> None:
        path = self.run_dir / "summary.json"
        merged = {**(json.loads(path.read_text()) if path.exists() else {}), **{k: _plain(v) for k, v in values.items()}}
        path.write_text(json.dumps(merged, indent=2))
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if not self._metrics.closed:
            self._metrics.close()
        if self.run is not None:
            self.run.finish()
            self.run = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


class StepTimes:
    """A training loop's ``log`` callback that records the wall seconds between consecutive step records (from
    ``start()`` for the first) and passes each record on to ``log``."""

    def __init__(self, log=None) -> None:
        self.log, self.seconds, self._last = log, [], time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, record: dict) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now
        if self.log is not None:
            self.log(record)

    @property
    def median(self) -> float | None:
        return sorted(self.seconds)[len(self.seconds) // 2] if self.seconds else None


def read_metrics(run_dir: str | Path, key: str = "step") -> list[dict]:
    """A run's per-step records from ``metrics.jsonl`` (those holding ``key``), one per step in step
    order. A resumed run logs again the steps after its last checkpoint: the later record wins (it is
    the one the run's weights come from), so no step counts twice. A line a kill cut short is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    last: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record and key in record:
            last[record["step"]] = record
    return [last[step] for step in sorted(last)]


# ---------------------------------------------------------------- MFU
def _count(config, part: str) -> int:
    from mimolab.model.vlm import MiMoVL

    with torch.device("meta"):
        model = MiMoVL(config)
    if part == "vision":
        return sum(p.numel() for p in model.visual.parameters())
    return sum(p.numel() for n, p in model.language_model.named_parameters() if not n.startswith("embed_tokens"))


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per text token of the language model (forward + backward)."""
    t = config.text
    return 6.0 * _count(config, "llm") + 12.0 * t.num_hidden_layers * t.hidden_size * seq_len


def vision_flops_per_patch(config, patches_per_image: int = 256) -> float:
    v = config.vision
    return 6.0 * _count(config, "vision") + 12.0 * v.depth * v.hidden_size * patches_per_image


# dense bf16 / fp32 (non-tensor-core) peaks from the datasheets, FLOP/s
GPU_PEAKS = {"H100": (989e12, 67e12), "H200": (989e12, 67e12), "A100": (312e12, 19.5e12), "L40S": (362e12, 91.6e12)}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (low, full) in GPU_PEAKS.items():
            if key in name:
                return low if dtype in (torch.bfloat16, torch.float16) else full
        return None
    return _cpu_matmul_flops(dtype)


@lru_cache(maxsize=4)
def _cpu_matmul_flops(dtype: torch.dtype = torch.float32, n: int = 1024) -> float:
    """A 1024^2 matrix product's FLOP/s on this CPU in ``dtype`` (bfloat16: 2-6x float32's, AVX512-BF16 or AMX)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def mfu(tokens_per_s: float, flops_per_token_: float, peak: float | None) -> float | None:
    return tokens_per_s * flops_per_token_ / peak if peak else None
