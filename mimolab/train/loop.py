"""The training loop shared by all stages: packed rows, gradient accumulation, clipping, a
warm-up + cosine schedule per parameter group, and crash-safe checkpoints that resume exactly.

A checkpoint directory holds the model in the Qwen2.5-VL format (``save_pretrained``) plus
``trainer_state.pt``: optimizer, step, data-stream position (the mixture sampler's state and the
samples drawn but not yet trained on) and RNG states. It is written to a temporary directory and
renamed into place, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

from mimolab.data.mixture import MixtureSampler
from mimolab.data.packing import TokenizedSample, best_fit, collate_packed
from mimolab.model.vlm import MiMoVL
from mimolab.train.stage import Stage, part_of

STATE_FILE = "trainer_state.pt"


def freeze_and_group(model: MiMoVL, stage: Stage) -> list[dict]:
    """requires_grad only for the stage's parts; one optimizer group per part (its own lr)."""
    groups: dict[str, list] = defaultdict(list)
    for name, param in model.named_parameters():
        part = part_of(name)
        param.requires_grad_(part in stage.lr)
        if part in stage.lr:
            groups[part].append(param)
    if not groups:
        raise ValueError(f"stage {stage.name!r} trains nothing: lr names no part with parameters")
    return [{"params": params, "lr": stage.lr[part], "base_lr": stage.lr[part], "part": part}
            for part, params in groups.items()]


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor) -> list[float | None]:
    """Mean next-token loss of each sample of a packed row (None for a sample with no targets)."""
    token_loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels[0, 1:].to(logits.device),
                                                   ignore_index=-100, reduction="none")
    valid = labels[0, 1:] != -100
    bounds = cu_seqlens.tolist()
    out = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        # targets of tokens start+1 .. end-1 sit at shifted indices start .. end-2
        seg = slice(start, end - 1)
        n = int(valid[seg].sum())
        out.append(float(token_loss[seg][valid[seg]].sum()) / n if n else None)
    return out


class Trainer:
    def __init__(self, model: MiMoVL, stage: Stage, sampler: MixtureSampler, run_dir: str | Path,
                 pad_id: int | None = None) -> None:
        self.model, self.stage, self.sampler = model, stage, sampler
        self.run_dir = Path(run_dir)
        self.pad_id = model.config.pad_token_id if pad_id is None else pad_id
        self.optimizer = torch.optim.AdamW(freeze_and_group(model, stage), weight_decay=stage.weight_decay,
                                           betas=(0.9, 0.95))
        self.step = 0
        self.pending: list[TokenizedSample] = []  # drawn from the stream, not yet trained on
        self._stream: Iterator[TokenizedSample] | None = None
        random.seed(stage.seed)
        torch.manual_seed(stage.seed)

    # ---------------------------------------------------------------- data
    def _next_sample(self) -> TokenizedSample:
        if self.pending:
            return self.pending.pop(0)
        if self._stream is None:
            self._stream = iter(self.sampler)
        return next(self._stream)

    def next_rows(self) -> list:
        """``rows_per_step`` packed rows; a sample that fits no row waits for the next step."""
        budget, carry = self.stage.row_tokens, []
        rows: list[list[TokenizedSample]] = [[] for _ in range(self.stage.rows_per_step)]
        room = [budget] * len(rows)
        while True:
            sample = self._next_sample()
            if len(sample) > budget:
                continue  # cannot fit any row (tokenise with max_length <= row_tokens to avoid this)
            best = best_fit(room, len(sample))
            if best is None:
                carry.append(sample)
                break
            rows[best].append(sample)
            room[best] -= len(sample)
        self.pending = carry + self.pending
        return [collate_packed(r, budget, self.pad_id) for r in rows if r]

    # ---------------------------------------------------------------- one optimizer step
    def train_step(self) -> dict:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * self.stage.lr_factor(self.step)
        rows = self.next_rows()
        n_targets = sum(int((r.labels[:, 1:] != -100).sum()) for r in rows)
        total, per_task, start = 0.0, defaultdict(list), time.perf_counter()
        for row in rows:
            out = self.model(**row.model_inputs())
            weight = int((row.labels[:, 1:] != -100).sum()) / max(1, n_targets)  # token-weighted across rows
            (out.loss * weight).backward()
            total += out.loss.item() * weight
            for task, loss in zip(row.tasks, per_sample_losses(out.logits.detach(), row.labels, row.cu_seqlens)):
                if loss is not None:
                    per_task[task].append(loss)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.stage.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        tokens = sum(r.n_tokens for r in rows)
        return {"step": self.step, "loss": total, "grad_norm": float(grad_norm), "tokens": tokens,
                "tokens_per_s": tokens / (time.perf_counter() - start),
                "packing_efficiency": tokens / (len(rows) * self.stage.row_tokens),
                **{f"lr/{g['part']}": g["lr"] for g in self.optimizer.param_groups},
                **{f"loss/{t}": sum(v) / len(v) for t, v in per_task.items()}}

    def train(self, steps: int | None = None, log=None) -> list[dict]:
        """Run to ``steps`` (default: the stage's), checkpointing every ``checkpoint_every`` steps."""
        steps = self.stage.steps if steps is None else steps
        history = []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as metrics:
            while self.step < steps:
                record = self.train_step()
                history.append(record)
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                if log is not None:
                    log(record)
                if self.step % self.stage.checkpoint_every == 0 or self.step == steps:
                    self.save_checkpoint()
        return history

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        final = self.run_dir / "checkpoints" / f"step-{self.step:06d}"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            self.model.save_pretrained(tmp / "model")
            state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(),
                     "pending": self.pending, "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}}
            torch.save(state, tmp / STATE_FILE)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @staticmethod
    def latest_checkpoint(run_dir: str | Path) -> Path | None:
        found = sorted((Path(run_dir) / "checkpoints").glob("step-*"))
        return found[-1] if found else None

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Load the latest (or a given) checkpoint of this run; False when there is none."""
        checkpoint = Path(checkpoint) if checkpoint else self.latest_checkpoint(self.run_dir)
        if checkpoint is None:
            return False
        loaded = MiMoVL.from_pretrained(checkpoint / "model", dtype=self.model.dtype)
        with torch.no_grad():
            for name, tensor in loaded.state_dict().items():
                self.model.state_dict()[name].copy_(tensor)
        state = torch.load(checkpoint / STATE_FILE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.pending, self.step, self._stream = state["pending"], state["step"], None
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        return True
