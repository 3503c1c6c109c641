"""The update's forward: each completion's per-token log-probabilities under the policy, computed once per
shared prompt.

A GRPO group's rollouts share their prompt (the same tokens and the same pixel tensors,
``Rollout.training_sample``). Rather than run that prompt once per rollout, a group goes into a packed row as
the prompt followed by each completion, and every completion attends to the prompt's keys and values before its
own (``segment_prefix``, ``attention.attend_per_segment``): the prompt's forward and backward, the vision tower's
included, run once per group; its gradient is the sum of what the completions send back, as it is across
separate rows. The numbers are those of one forward per rollout (tests/test_grpo.py).

    logprobs, entropies = completion_logprobs(model, samples, temperature=0.7, row_tokens=2048)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mimolab.data.packing import TokenizedSample
from mimolab.data.tokenize import IGNORE_INDEX


@dataclass
class _Row:
    """One packed row: prompts, each followed by its completions."""

    ids: list[int] = field(default_factory=list)
    positions: list[torch.Tensor] = field(default_factory=list)  # (3, n) per segment
    lengths: list[int] = field(default_factory=list)  # per segment
    prefix: list[int] = field(default_factory=list)  # per segment: the prompt segment it continues, or -1
    features: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per prompt, in row order
    keep: list[int] = field(default_factory=list)  # positions whose logits predict a target
    labels: list[int] = field(default_factory=list)  # the target each of them predicts
    owners: list[tuple[int, int]] = field(default_factory=list)  # (sample, number of its targets), in keep order

    def add_segment(self, ids: list[int], positions: torch.Tensor, prefix: int) -> int:
        self.ids += ids
        self.positions.append(positions)
        self.lengths.append(len(ids))
        self.prefix.append(prefix)
        return len(self.lengths) - 1


def prompt_length(sample: TokenizedSample) -> int:
    """Tokens before the first target: the prompt a rollout continues."""
    return next((i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX), len(sample.labels))


def group_by_prompt(samples: list[TokenizedSample]) -> list[list[int]]:
    """Indices of the samples that share one prompt (same tokens before the first target, same pixel tensors),
    in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(samples):
        n = prompt_length(s)
        key = (tuple(s.input_ids[:n]), id(s.pixel_values), id(s.pixel_values_videos))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def pack_groups(samples: list[TokenizedSample], features: list[dict], row_tokens: int, media_ids: tuple[int, ...]
                ) -> list[_Row]:
    """Rows of at most ``row_tokens``: each group's prompt once, then its completions (a group too large for one
    row is split, its prompt in each part); rows fill in order, a new one when the next part does not fit."""
    rows, room = [], 0
    for group in group_by_prompt(samples):
        first = samples[group[0]]
        n = prompt_length(first)
        parts, size = [], row_tokens + 1
        for i in group:
            s = samples[i]
            if len(s) > row_tokens:
                raise ValueError(f"a rollout of {len(s)} tokens does not fit row_tokens={row_tokens}")
            if any(t in media_ids for t in s.input_ids[n:]):
                raise ValueError(f"sample {i} has an image or video placeholder after its prompt; its media must "
                                 "all come before the first target")
            if size + len(s) - n > row_tokens:
                parts.append([])
                size = n
            parts[-1].append(i)
            size += len(s) - n
        for part in parts:
            size = n + sum(len(samples[i]) - n for i in part)
            if size > room:
                rows.append(_Row())
                room = row_tokens
            room -= size
            _add_group(rows[-1], samples, part, n, features[part[0]])
    return rows


def _add_group(row: _Row, samples: list[TokenizedSample], part: list[int], n: int, features: dict) -> None:
    """Append a prompt of ``n`` tokens and the completions of ``part`` to ``row``; token t + 1 is predicted at t."""
    first = samples[part[0]]
    prompt, prompt_start = -1, len(row.ids)
    if n:
        prompt = row.add_segment(first.input_ids[:n], first.position_ids[:, :n], -1)
        row.features.append(features)
    for i in part:
        s = samples[i]
        start = len(row.ids)
        if len(s) > n:  # a sample with no target has nothing after its prompt (no empty segment)
            row.add_segment(s.input_ids[n:], s.position_ids[:, n:], prompt)
        # position j of the sample sits at start + j - n in the row (j >= n), its prompt's last at prompt_start + n - 1
        targets = [j for j in range(1, len(s)) if s.labels[j] != IGNORE_INDEX]
        row.keep += [start + j - 1 - n if j > n else prompt_start + n - 1 for j in targets]
        row.labels += [s.labels[j] for j in targets]
        row.owners.append((i, len(targets)))


def shared_media_features(model, samples: list[TokenizedSample]) -> list[dict[str, torch.Tensor]]:
    """Each sample's vision features (``{"image": (tokens, hidden), "video": ...}``), the vision tower run once
    over the distinct pixel tensors (a group's rollouts share their prompt's)."""
    merge2 = model.config.vision.spatial_merge_size ** 2
    out: list[dict[str, torch.Tensor]] = [{} for _ in samples]
    for kind, pix_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                    ("video", "pixel_values_videos", "video_grid_thw")):
        distinct: dict[int, tuple[torch.Tensor, list]] = {}  # id(pixels) -> (pixels, grids), in first-seen order
        for s in samples:
            if getattr(s, pix_key) is not None:
                distinct.setdefault(id(getattr(s, pix_key)), (getattr(s, pix_key), getattr(s, grid_key)))
        if not distinct:
            continue
        pixels = torch.cat([px for px, _ in distinct.values()]).to(model.device, model.visual.dtype)
        grids = torch.tensor([g for _, gs in distinct.values() for g in gs], device=model.device)
        sizes = [sum(t * h * w for t, h, w in gs) // merge2 for _, gs in distinct.values()]
        by_pixels = dict(zip(distinct, model.visual(pixels, grids).split(sizes)))
        for i, s in enumerate(samples):
            if getattr(s, pix_key) is not None:
                out[i][kind] = by_pixels[id(getattr(s, pix_key))]
    return out


def completion_logprobs(model, samples: list[TokenizedSample], temperature: float, row_tokens: int,
                        with_entropy: bool = False, suppress: tuple[int, ...] = (),
                        bf16: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-token log-probabilities (and entropies) of each sample's target tokens under softmax(logits / T).
    Samples sharing a prompt are packed as that prompt once and their completions after it (module docstring),
    in rows of at most ``row_tokens`` (one forward per row, no padding); tokens in ``suppress`` are out of the
    distribution, as the generator's ``suppress_token_ids``. The head runs on the positions that predict a target
    only. ``bf16``: the forward under bfloat16 autocast (the log-softmax stays float32)."""
    c = model.config
    device = model.device
    out_lp: list[torch.Tensor | None] = [None] * len(samples)
    out_ent: list[torch.Tensor | None] = [None] * len(samples)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        features = shared_media_features(model, samples)
    media_ids = (c.image_token_id, c.video_token_id)
    for row in pack_groups(samples, features, row_tokens, media_ids):
        ids = torch.tensor([row.ids], device=device)
        cu = torch.tensor([0] + row.lengths, device=device).cumsum(0).to(torch.int32)
        media = {kind: torch.cat(parts) for kind in ("image", "video")
                 if (parts := [f[kind] for f in row.features if kind in f])}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            embeds = model.embed(ids, image_features=media.get("image"), video_features=media.get("video"))
            logits = model(ids, inputs_embeds=embeds, position_ids=torch.cat(row.positions, 1)[:, None].to(device),
                           cu_seqlens=cu, segment_prefix=row.prefix,
                           logits_to_keep=torch.tensor(row.keep, dtype=torch.long)).logits[0].float()
        if suppress:
            logits = logits.index_fill(-1, torch.tensor(suppress, device=logits.device), float("-inf"))
        logp_all = torch.log_softmax(logits / temperature, dim=-1)
        sizes = [count for _, count in row.owners]
        labels = torch.tensor(row.labels, device=logits.device).split(sizes)
        for (i, _), logp, lab in zip(row.owners, logp_all.split(sizes), labels):
            out_lp[i] = logp.gather(-1, lab[:, None])[:, 0]
            if with_entropy:
                out_ent[i] = -(logp.exp() * logp.clamp_min(-1e30)).sum(-1).detach()  # 0 * -inf -> 0
    return out_lp, out_ent


__all__ = ["completion_logprobs", "group_by_prompt", "prompt_length", "shared_media_features"]
