"""Checkpoints and resume for every loop: pre-training stages (``loop.py``), the vision warm-up
(``vision_warmup.py``) and GRPO (``mimolab/rl/trainer.py``).

    run_dir/checkpoints/step-000050/
        model/               the model in Qwen2.5-VL format; with LoRA also model/adapter/ (peft's format)
        <state file>         the loop's own state (torch.save): step, optimizer, data position, RNG

A checkpoint is written into a temporary sibling and renamed into place (``atomic_directory``), so a
crash mid-write leaves the previous one whole. What a kill can leave behind (a half-written
temporary, or a finished step moved aside while its replacement was renamed in) is cleaned up, or
put back, the next time the run looks for its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from mimolab.model.checkpoint import atomic_directory
from mimolab.model.vlm import MiMoVL
from mimolab.train.lora import has_lora, load_lora, save_lora

LEFTOVER = re.compile(r"^\.(?P<name>step-\d+)\.(?P<kind>tmp|old)-")


def save_model(model: MiMoVL, path: Path) -> None:
    """The model in Qwen2.5-VL format; with LoRA, the base weights plus the adapters in peft's format
    (``path/adapter``), which is what transformers + peft load."""
    model.save_pretrained(path)  # base weights only: save_pretrained leaves adapters out
    if has_lora(model):
        save_lora(model, path / "adapter")


def load_model_into(model: MiMoVL, path: Path) -> None:
    """Copy a checkpoint saved by ``save_model`` into ``model`` in place (optimizer references stay valid)."""
    loaded = MiMoVL.from_pretrained(path, dtype=model.dtype)
    if has_lora(model):
        load_lora(loaded, path / "adapter")
    target = model.state_dict()
    with torch.no_grad():
        for name, tensor in loaded.state_dict().items():
            target[name].copy_(tensor)


def save_final(model: MiMoVL, processor, path: str | Path) -> Path:
    """Model and processor into one directory, atomically (a reader never sees half of it)."""
    with atomic_directory(path) as tmp:
        save_model(model, tmp)  # (save_pretrained writes its own temporary directory and puts it at tmp)
        processor.save_pretrained(tmp)
    return Path(path)


def clean_leftovers(folder: Path) -> None:
    """Remove the temporaries a killed write left in ``folder``; a step that was moved aside and not
    replaced (killed between the two renames of ``replace_dir``) is put back."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        match = LEFTOVER.match(path.name)
        if match is None:
            continue
        target = folder / match["name"]
        if match["kind"] == "old" and not target.exists():
            path.rename(target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest ``checkpoints/step-*`` (after cleaning up what a kill left), or None."""
    folder = Path(run_dir) / "checkpoints"
    clean_leftovers(folder)
    found = sorted(folder.glob("step-*"))
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, model: MiMoVL, state: dict, state_file: str) -> Path:
    """``run_dir/checkpoints/step-<step>``: the model (+ adapters) and the loop's ``state``, atomically."""
    final = Path(run_dir) / "checkpoints" / f"step-{step:06d}"
    with atomic_directory(final) as tmp:  # a re-run writing the same step replaces it whole
        save_model(model, tmp / "model")
        torch.save(state, tmp / state_file)
    return final


def load_checkpoint(run_dir: str | Path, model: MiMoVL, state_file: str, checkpoint: str | Path | None = None) -> dict | None:
    """Load the latest (or a given) checkpoint's weights into ``model`` and return the loop's state;
    None when the run has no checkpoint yet."""
    checkpoint = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if checkpoint is None:
        return None
    load_model_into(model, checkpoint / "model")
    return torch.load(checkpoint / state_file, weights_only=False)


def stop_if_not_finite(run: str, step: int, loss: float, grad_norm: float, run_dir: str | Path) -> None:
    """Raise before the optimizer moves when a step's loss or gradient is NaN or infinite: the weights
    stay as they were and the last checkpoint written stays the last good one."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    raise FloatingPointError(f"{run}, step {step}: loss {loss}, gradient norm {grad_norm}: a non-finite value stops "
                             f"the run before the weights move. The last good checkpoint is kept: "
                             f"{latest_checkpoint(run_dir) or 'none written yet'}")


class LoopRNG:
    """A loop's own CPU random stream (dropout, LoRA's initialisation): ``with rng.active():`` runs a
    block on it and restores the caller's global generator afterwards, so a loop's draws are
    resumable (``state`` goes into its checkpoint) and never move anyone else's RNG."""

    def __init__(self, seed: int) -> None:
        self.state = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            try:
                yield
            finally:
                self.state = torch.get_rng_state()


__all__ = ["LoopRNG", "latest_checkpoint", "load_checkpoint", "load_model_into", "save_checkpoint", "save_final",
           "save_model", "stop_if_not_finite"]
