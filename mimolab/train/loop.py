"""The training loop shared by all stages: packed rows, gradient accumulation, clipping, a
warm-up + cosine schedule per parameter group, and crash-safe checkpoints that resume exactly.

Several processes (``accelerate launch``) split each step's packed rows between them: every
process draws the same deterministic stream and packs the same rows, then trains on its share
(``rows[rank::world]``). Each row's loss is weighted by its share of the *global* target tokens,
so the averaged gradient equals the single-process one for the same global batch.

A checkpoint (``checkpoints.py``) holds the model in the Qwen2.5-VL format plus ``trainer_state.pt``:
optimizer, step, data-stream position (the mixture sampler's state and the samples drawn but not
yet trained on) and the loop's own RNG state. A step whose loss or gradient is not finite stops the
run before the optimizer moves, so the last checkpoint written is always a good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mimolab.data.mixture import MixtureSampler
from mimolab.data.packing import PackedRow, TokenizedSample, best_fit, collate_packed
from mimolab.model.vlm import IGNORE_INDEX, MiMoVL, mask_segment_starts, part_of
from mimolab.train.checkpoints import LoopRNG, load_checkpoint, save_checkpoint, stop_if_not_finite
from mimolab.train.lora import add_lora, has_lora
from mimolab.train.stage import Stage
from mimolab.train.tracking import Tracker, flops_per_token, mfu, peak_flops

STATE_FILE = "trainer_state.pt"


def freeze_and_group(model: MiMoVL, stage: Stage) -> list[dict]:
    """requires_grad only for the stage's parts; one optimizer group per part (its own lr), split in
    two: weight decay on matrices only, never on norms and biases (as nanoGPT and most LLM recipes)."""
    groups: dict[tuple[str, bool], list] = defaultdict(list)
    lora = stage.lora is not None
    for name, param in model.named_parameters():
        part = part_of(name)
        # with LoRA only the adapters of the listed parts train; the base weights stay frozen
        trains = part in stage.lr and (not lora or "lora_" in name)
        param.requires_grad_(trains)
        if trains:
            groups[part, param.dim() >= 2].append(param)
    if not groups:
        raise ValueError(f"stage {stage.name!r} trains nothing: lr names no part with parameters")
    return [{"params": params, "lr": stage.lr[part], "base_lr": stage.lr[part], "part": part,
             "weight_decay": stage.weight_decay if decays else 0.0}
            for (part, decays), params in groups.items()]


def without_padding(row: PackedRow) -> PackedRow:
    """The row cut after its last sample. The padding tail is a segment of its own, which no sample attends to
    and which has no targets: dropping it changes none of the samples' numbers and saves its share of the work."""
    n = row.n_tokens
    if n == 0 or n == row.input_ids.shape[1]:
        return row
    return dataclasses.replace(row, input_ids=row.input_ids[:, :n], labels=row.labels[:, :n],
                               position_ids=row.position_ids[..., :n], cu_seqlens=row.cu_seqlens[:-1])


def shifted_targets(labels: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(S-1,) the target of each position of a packed row (token t + 1 for position t), -100 where there is
    none: unlabelled tokens, and a sample's first token, never predicted from the previous sample."""
    return mask_segment_starts(labels, cu_seqlens)[0, 1:]


def target_segments(targets: torch.Tensor, cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions with a target, and the sample (segment of ``cu_seqlens``) each belongs to."""
    positions = (targets != IGNORE_INDEX).nonzero()[:, 0]
    return positions, torch.searchsorted(cu_seqlens[1:].to(positions), positions, right=True)


def per_sample_means(token_loss: torch.Tensor, segment: torch.Tensor, n_samples: int) -> list[float | None]:
    """Mean of each sample's token losses (None for a sample with no targets), read back in one go."""
    sums = torch.zeros(n_samples, device=token_loss.device).index_add_(0, segment, token_loss.detach().float())
    counts = torch.bincount(segment, minlength=n_samples)
    return [total / n if n else None for total, n in zip(sums.tolist(), counts.tolist())]


def per_sample_losses(logits: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor) -> list[float | None]:
    """Mean next-token loss of each sample of a packed row (None for a sample with no targets)."""
    targets = shifted_targets(labels, cu_seqlens).to(logits.device)
    positions, segment = target_segments(targets, cu_seqlens)
    token_loss = F.cross_entropy(logits[0, positions].float(), targets[positions], reduction="none")
    return per_sample_means(token_loss, segment, len(cu_seqlens) - 1)


def sample_weights(segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Weights of a row's targets (their samples given by ``segment``) that give each sample with targets a
    total weight of 1, shared equally by its target tokens."""
    return 1.0 / torch.bincount(segment, minlength=n_segments)[segment]


def count_samples(labels: torch.Tensor, cu_seqlens: torch.Tensor) -> int:
    """How many samples of a packed row have targets."""
    _, segment = target_segments(shifted_targets(labels, cu_seqlens), cu_seqlens)
    return len(torch.unique(segment))


def make_accelerator(mixed_precision: str = "no"):
    """An ``accelerate.Accelerator`` for the trainer: DDP that tolerates parts a row leaves unused
    (a text-only row never touches the ViT), on CPU (gloo) when there is no GPU."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


class Trainer:
    def __init__(self, model: MiMoVL, stage: Stage, sampler: MixtureSampler, run_dir: str | Path,
                 pad_id: int | None = None, *, tracker: Tracker | None = None, accelerator=None) -> None:
        self.model, self.stage, self.sampler = model, stage, sampler
        self.run_dir = Path(run_dir)
        self.pad_id = model.config.padding_id if pad_id is None else pad_id
        self.rng = LoopRNG(stage.seed)  # the loop's own stream: the caller's global RNG is never touched
        if stage.lora is not None and not has_lora(model):
            with self.rng.active():  # lora_A's random start is the run's, not whatever ran before
                add_lora(model, **stage.lora)
        model.set_gradient_checkpointing(stage.gradient_checkpointing)
        model.compile_layers(stage.compiles(model.device))
        # fused: one kernel over all tensors, 4x faster than the per-tensor loop on a CPU (float32 state either way)
        self.optimizer = torch.optim.AdamW(freeze_and_group(model, stage), weight_decay=stage.weight_decay,
                                           betas=(0.9, 0.95), fused=True)
        self.accelerator = accelerator
        self.rank, self.world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
        if self.stage.rows_per_step % self.world:
            raise ValueError(f"rows_per_step ({stage.rows_per_step}) must be a multiple of the {self.world} processes")
        self.wrapped = model  # what forward runs through: the DDP/FSDP wrapper when distributed
        if accelerator is not None and self.world > 1:
            self.wrapped, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.tracker = tracker
        self.step = 0
        self.pending: list[TokenizedSample] = []  # drawn from the stream, not yet trained on
        self._stream: Iterator[TokenizedSample] | None = None
        self._flops_per_token = flops_per_token(model.config, stage.row_tokens)
        self._peak = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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
        # an empty row stays (all padding, no targets) so every process runs the same number of passes
        return [collate_packed(r, budget, self.pad_id) for r in rows if r or self.world > 1]

    # ---------------------------------------------------------------- one optimizer step
    def train_step(self) -> dict:
        with self.rng.active():
            return self._train_step()

    def _train_step(self) -> dict:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * self.stage.lr_factor(self.step)
        all_rows = self.next_rows()
        # global: every process packs all rows
        n_targets = sum(int((shifted_targets(r.labels, r.cu_seqlens) != IGNORE_INDEX).sum()) for r in all_rows)
        n_samples = (sum(count_samples(r.labels, r.cu_seqlens) for r in all_rows)
                     if self.stage.loss_weighting == "sample" else 0)
        rows = all_rows[self.rank::self.world]
        total, per_task, start = 0.0, defaultdict(list), time.perf_counter()
        for i, row in enumerate(rows):
            last = i == len(rows) - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.accelerator.no_sync(self.wrapped)
            with sync:
                loss, token_loss, segment = self._row_loss(row, max(1, n_targets), max(1, n_samples))
                (loss * self.world).backward()  # DDP averages over processes; the weights are global
            total += float(loss.detach())
            for task, value in zip(row.tasks, per_sample_means(token_loss, segment, len(row.tasks))):
                if value is not None:
                    per_task[task].append(value)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.world > 1:
            grad_norm = self.accelerator.clip_grad_norm_(params, self.stage.grad_clip)
            total = self._sum_across_processes(total)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.stage.grad_clip)
        stop_if_not_finite(f"stage {self.stage.name!r}", self.step + 1, total, float(grad_norm), self.run_dir)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - start
        tokens = sum(r.n_tokens for r in all_rows)
        if self._peak is None:
            self._peak = peak_flops(self.model.device, torch.bfloat16 if self.stage.bf16 else self.model.dtype) or 0.0
        return {"step": self.step, "loss": total, "grad_norm": float(grad_norm), "tokens": tokens,
                "tokens_per_s": tokens / seconds, "mfu": mfu(tokens / seconds / self.world, self._flops_per_token,
                                                            self._peak or None),
                "packing_efficiency": tokens / (len(all_rows) * self.stage.row_tokens),
                **{f"lr/{g['part']}": g["lr"] for g in self.optimizer.param_groups},
                **{f"loss/{t}": sum(v) / len(v) for t, v in per_task.items()}}

    def _row_loss(self, row, n_targets: int, n_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The row's part of the step's loss (weighted across all rows of all processes), its token losses and
        the sample of each. The head reads only the positions with a target (a tenth to a fifth of a row)."""
        device, row = self.model.device, without_padding(row)
        targets = shifted_targets(row.labels, row.cu_seqlens).to(device)
        positions, segment = target_segments(targets, row.cu_seqlens)
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in row.model_inputs().items() if k != "labels"}
        mtp = len(self.model.language_model.mtp_layers) > 0  # MTP heads read every position: the model's own loss
        with self.stage.autocast(device):
            if mtp:
                out = self.wrapped(**inputs, labels=row.labels.to(device))
                logits = out.logits[0, positions]
            else:
                out = self.wrapped(**inputs, logits_to_keep=positions)
                logits = out.logits[0]
        token_loss = F.cross_entropy(logits.float(), targets[positions], reduction="none")
        if self.stage.loss_weighting == "sample":
            loss = (token_loss * sample_weights(segment, len(row.cu_seqlens) - 1)).sum() / n_samples
        elif mtp and len(positions):
            loss = out.loss * (len(positions) / n_targets)
        else:
            loss = token_loss.sum() / n_targets
        if not len(positions):  # an empty row still runs backward, so every process takes part in each pass
            loss = logits.sum() * 0.0
        return loss, token_loss.detach(), segment

    def _sum_across_processes(self, value: float) -> float:
        return float(self.accelerator.reduce(torch.tensor([value], device=self.model.device), "sum")[0])

    def train(self, steps: int | None = None, log: Callable[[dict], None] | None = None,
              progress: bool = True) -> list[dict]:
        """Run to ``steps`` (default: the stage's), checkpointing every ``checkpoint_every`` steps.
        Records go to the tracker (``metrics.jsonl`` + W&B) when one was given, else to ``metrics.jsonl``."""
        steps = self.stage.steps if steps is None else steps
        history = []
        tracker = self.tracker or Tracker(self.run_dir, {}, mode="disabled")
        bar = tqdm(total=steps, initial=self.step, desc=self.stage.name, disable=not (progress and self.is_main))
        try:
            while self.step < steps:
                record = self.train_step()
                history.append(record)
                if self.is_main:
                    tracker.log(record, step=record["step"])
                if log is not None:
                    log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                if self.step % self.stage.checkpoint_every == 0 or self.step == steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self.tracker is None:
                tracker.finish()
        return history

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        """Main process writes; the others wait, so no process runs ahead of a half-written checkpoint."""
        final = self.run_dir / "checkpoints" / f"step-{self.step:06d}"
        if self.is_main:
            save_checkpoint(self.run_dir, self.step, self.model, {
                "step": self.step, "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(),
                "pending": self.pending, "rng": {"torch": self.rng.state}}, STATE_FILE)
        if self.world > 1:
            self.accelerator.wait_for_everyone()
        return final

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Load the latest (or a given) checkpoint of this run; False when there is none."""
        state = load_checkpoint(self.run_dir, self.model, STATE_FILE, checkpoint)
        if state is None:
            return False
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.pending, self.step, self._stream = state["pending"], state["step"], None
        self.rng.state = state["rng"]["torch"]
        return True
