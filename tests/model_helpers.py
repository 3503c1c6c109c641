"""Shared builders for model tests: tiny configs, a transformers twin with the same weights, samples."""

from __future__ import annotations

import copy

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mimolab import MiMoVL, MiMoVLConfig

PATCH_DIM = 3 * 2 * 14 * 14


def tiny_config(**changes) -> MiMoVLConfig:
    """The smoke preset, with field changes (``vision={...}``, ``text={...}`` dicts allowed)."""
    return MiMoVLConfig.from_name("smoke", **changes)


def hf_model(cfg: MiMoVLConfig, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict()))).eval()


def make_pair(cfg: MiMoVLConfig, path, seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, MiMoVL]:
    """transformers' model and mimolab's, with the same random weights (through a saved checkpoint)."""
    hf = hf_model(cfg, seed)
    hf.save_pretrained(path)
    return hf, MiMoVL.from_pretrained(path, attn_implementation=cfg.attn_implementation)


def sample_ids(cfg: MiMoVLConfig, images=(), videos=(), n_text: int = 5, seed: int = 0) -> list[int]:
    """Text, then each image and video wrapped in vision start/end, with text between them."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(0, 1500, (n,), generator=g).tolist()  # noqa: E731
    ids = text(3)
    for token, grids in ((cfg.image_token_id, images), (cfg.video_token_id, videos)):
        for grid in grids:
            n = grid[0] * grid[1] * grid[2] // cfg.vision.spatial_merge_size**2
            ids += [cfg.vision_start_token_id, *[token] * n, cfg.vision_end_token_id, *text(2)]
    return ids + text(n_text)


def pixels_for(grids, seed: int = 0) -> torch.Tensor | None:
    if not grids:
        return None
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=g)


def batch_of(cfg: MiMoVLConfig, rows: list[dict], left_pad: bool = True) -> dict:
    """rows: dicts with images, videos, n_text, seed. Returns padded model inputs (+ mm_token_type_ids)."""
    seqs = [sample_ids(cfg, r.get("images", ()), r.get("videos", ()), r.get("n_text", 5), r.get("seed", i))
            for i, r in enumerate(rows)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), cfg.pad_token_id)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left_pad else slice(0, len(s))
        ids[i, cols], mask[i, cols] = torch.tensor(s), 1
    images = [g for r in rows for g in r.get("images", ())]
    videos = [g for r in rows for g in r.get("videos", ())]
    seconds = [s for r in rows for s in r.get("seconds", [1.0] * len(r.get("videos", ())))]
    batch = {"input_ids": ids, "attention_mask": mask}
    if images:
        batch.update(pixel_values=pixels_for(images, 1), image_grid_thw=torch.tensor(images))
    if videos:
        batch.update(pixel_values_videos=pixels_for(videos, 2), video_grid_thw=torch.tensor(videos),
                     second_per_grid_ts=torch.tensor(seconds))
    types = torch.zeros_like(ids)
    types[ids == cfg.image_token_id], types[ids == cfg.video_token_id] = 1, 2
    batch["mm_token_type_ids"] = types
    return batch


def without(batch: dict, *keys: str) -> dict:
    return {k: v for k, v in batch.items() if k not in keys}
