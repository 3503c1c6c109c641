"""Sequence packing: several tokenised samples in one row of a fixed token budget.

Each sample keeps its own 3D positions (restarting at 0) and ``cu_seqlens`` marks where it starts,
so the model attends only within a sample (``MiMoVL.forward(cu_seqlens=...)``). Packing is
streaming best-fit with a small window of open rows: a sample goes into the open row it fills
best; when more than ``max_open`` rows are open the fullest is emitted. Deterministic for a given
input order. Samples longer than the budget are skipped and counted (truncate them upstream).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class TokenizedSample:
    """One conversation ready for the model. ``labels`` is -100 outside assistant turns."""

    input_ids: list[int]
    labels: list[int]
    position_ids: torch.Tensor  # (3, n) from get_rope_index
    task: str = "text"
    pixel_values: torch.Tensor | None = None  # (patches, patch_dim) of all its images
    image_grid_thw: list[list[int]] = field(default_factory=list)
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: list[list[int]] = field(default_factory=list)
    second_per_grid_ts: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PackedRow:
    """A model-ready packed row (batch size 1) and what went into it."""

    input_ids: torch.Tensor  # (1, budget)
    labels: torch.Tensor  # (1, budget)
    position_ids: torch.Tensor  # (3, 1, budget)
    cu_seqlens: torch.Tensor  # (n_samples + 2,): samples, then the padding as a last segment
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    pixel_values_videos: torch.Tensor | None
    video_grid_thw: torch.Tensor | None
    second_per_grid_ts: torch.Tensor | None
    tasks: list[str]
    n_tokens: int  # real (non-padding) tokens

    def model_inputs(self) -> dict:
        keys = ("input_ids", "labels", "position_ids", "cu_seqlens", "pixel_values", "image_grid_thw",
                "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def collate_packed(samples: list[TokenizedSample], budget: int, pad_id: int) -> PackedRow:
    n = sum(len(s) for s in samples)
    if n > budget:
        raise ValueError(f"{n} tokens do not fit a row of {budget}")
    pad = budget - n
    ids = [t for s in samples for t in s.input_ids] + [pad_id] * pad
    labels = [t for s in samples for t in s.labels] + [-100] * pad
    positions = torch.cat([s.position_ids for s in samples] + [torch.zeros(3, pad, dtype=torch.long)], dim=1)
    lengths = [len(s) for s in samples] + ([pad] if pad else [])
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        return torch.cat(parts) if parts else None

    def grids(name: str) -> torch.Tensor | None:
        rows = [g for s in samples for g in getattr(s, name)]
        return torch.tensor(rows, dtype=torch.long) if rows else None

    seconds = [x for s in samples for x in s.second_per_grid_ts]
    return PackedRow(
        input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), position_ids=positions[:, None],
        cu_seqlens=cu, pixel_values=cat("pixel_values"), image_grid_thw=grids("image_grid_thw"),
        pixel_values_videos=cat("pixel_values_videos"), video_grid_thw=grids("video_grid_thw"),
        second_per_grid_ts=torch.tensor(seconds) if seconds else None, tasks=[s.task for s in samples], n_tokens=n,
    )


def collate_left_padded(samples: list[TokenizedSample], pad_id: int) -> dict[str, torch.Tensor]:
    """A left-padded batch (input_ids, attention_mask and the vision inputs of every row, in row order)
    for generation. A sample repeated in the list is repeated in the batch, pixels too: for several
    samples of one prompt, pass it once and ask ``generate`` for ``num_return_sequences``."""
    width = max(len(s) for s in samples)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s.input_ids for s in samples])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in samples])
    batch = {"input_ids": ids, "attention_mask": mask}
    for pix, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        parts = [getattr(s, pix) for s in samples if getattr(s, pix) is not None]
        if parts:
            batch[pix] = torch.cat(parts)
            batch[grid] = torch.tensor([g for s in samples for g in getattr(s, grid)], dtype=torch.long)
    seconds = [x for s in samples for x in s.second_per_grid_ts]
    if seconds:
        batch["second_per_grid_ts"] = torch.tensor(seconds)
    return batch


@dataclass
class PackingStats:
    rows: int = 0
    samples: int = 0
    tokens: int = 0
    budget: int = 0
    skipped_too_long: int = 0
    naive_padded_tokens: int = 0  # what padding every sample to the longest in its row would cost

    @property
    def efficiency(self) -> float:
        """Share of real tokens in the packed rows."""
        return self.tokens / max(1, self.rows * self.budget)


def best_fit(room: list[int], length: int) -> int | None:
    """Index of the row with the least room that still holds ``length`` tokens (None: none does)."""
    fits = [i for i, r in enumerate(room) if r >= length]
    return min(fits, key=lambda i: room[i]) if fits else None


def pack(samples: Iterable[TokenizedSample], budget: int, pad_id: int, *, max_open: int = 8,
         stats: PackingStats | None = None) -> Iterator[PackedRow]:
    """Stream packed rows of exactly ``budget`` tokens (the tail of each row is padding)."""
    stats = stats if stats is not None else PackingStats()
    stats.budget = budget
    open_rows: list[list[TokenizedSample]] = []
    room: list[int] = []

    def emit(i: int) -> PackedRow:
        row = open_rows.pop(i)
        room.pop(i)
        stats.rows += 1
        stats.samples += len(row)
        stats.tokens += sum(len(s) for s in row)
        stats.naive_padded_tokens += len(row) * max(len(s) for s in row)
        return collate_packed(row, budget, pad_id)

    for sample in samples:
        if len(sample) > budget:
            stats.skipped_too_long += 1
            continue
        best = best_fit(room, len(sample))  # the open row it fills most tightly
        if best is not None:
            open_rows[best].append(sample)
            room[best] -= len(sample)
        else:
            open_rows.append([sample])
            room.append(budget - len(sample))
        if len(open_rows) > max_open:
            yield emit(min(range(len(room)), key=lambda i: room[i]))
    while open_rows:
        yield emit(0)
