"""Shared builders for the model tests: tiny configs, a transformers twin with the same weights,
samples with images and videos, padded batches and packed rows.

A sample is a dict of model inputs for one sequence (batch of 1) plus ``mm_token_type_ids``
(0 text, 1 image placeholder, 2 video placeholder), which transformers 5 needs to compute 3D
positions and mimolab does not take: drop it with ``model_inputs`` before calling mimolab.
"""

from __future__ import annotations

import copy
import math

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mimolab import MiMoVL, MiMoVLConfig

PATCH_DIM = 3 * 2 * 14 * 14  # channels * temporal patch * patch * patch
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def tiny_config(**changes) -> MiMoVLConfig:
    """The smoke preset (window 56, full attention in block 1, 4 heads / 2 KV heads, tied
    embeddings), with field changes (``vision={...}``, ``text={...}`` dicts allowed)."""
    return MiMoVLConfig.from_name("smoke", **changes)


def randomize_(model: torch.nn.Module, seed: int = 0, embed_std: float = 0.1) -> torch.nn.Module:
    """Give every parameter an O(1)-scale random value, in place.

    With the usual init (std 0.02) attention is almost uniform, so a wrong position or mask moves
    the logits by less than the tolerances used here (replacing the 3D positions by 1D ones moved
    them by 2e-4). With these weights attention is peaked and the same mistake moves them by ~0.1.
    Works on mimolab's and transformers' models alike (it only looks at shapes and name endings).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:  # matrices and conv kernels: unit gain
                head = "embed_tokens" in name or name.startswith("lm_head")  # logits of a few units
                std = embed_std if head else 1 / math.sqrt(p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            else:  # norm weights
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
    return model


def random_mimolab(cfg: MiMoVLConfig, seed: int = 0) -> MiMoVL:
    return randomize_(MiMoVL(cfg), seed).eval()


def hf_model(cfg: MiMoVLConfig, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict())))
    return randomize_(model, seed).eval()


def make_hf_pair(cfg: MiMoVLConfig, path, seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, MiMoVL]:
    """transformers' model and mimolab's with the same random weights, shared through ``path``."""
    hf = hf_model(cfg, seed)
    hf.save_pretrained(path)
    return hf, MiMoVL.from_pretrained(path, attn_implementation=cfg.attn_implementation)


def token_types(cfg: MiMoVLConfig, ids: torch.Tensor) -> torch.Tensor:
    types = torch.zeros_like(ids)
    types[ids == cfg.image_token_id] = 1
    types[ids == cfg.video_token_id] = 2
    return types


def build_sample(cfg: MiMoVLConfig, images=(), videos=(), seconds=None, n_text: int = 5, seed: int = 0) -> dict:
    """One sequence: 3 text tokens, then each image and video wrapped in vision start/end with 2 text
    tokens after it, then ``n_text`` text tokens. Pixels are random, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    plain = min(1500, cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id)
    text = lambda n: torch.randint(0, plain, (n,), generator=g).tolist()  # noqa: E731  (below the media ids)
    ids = text(3)
    for token, grids in ((cfg.image_token_id, images), (cfg.video_token_id, videos)):
        for t, h, w in grids:
            n = t * h * w // cfg.vision.spatial_merge_size**2
            ids += [cfg.vision_start_token_id, *[token] * n, cfg.vision_end_token_id, *text(2)]
    ids = torch.tensor([ids + text(n_text)])
    sample = {"input_ids": ids}
    pixels = lambda grids: torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=g)  # noqa: E731
    if images:
        sample.update(pixel_values=pixels(images), image_grid_thw=torch.tensor(images))
    if videos:
        sample.update(pixel_values_videos=pixels(videos), video_grid_thw=torch.tensor(videos),
                      second_per_grid_ts=torch.tensor(seconds if seconds is not None else [1.0] * len(videos)))
    sample["mm_token_type_ids"] = token_types(cfg, ids)
    return sample


def build_samples(cfg: MiMoVLConfig, rows: list[dict]) -> list[dict]:
    """rows: build_sample keyword dicts (``seed`` defaults to the row's index)."""
    return [build_sample(cfg, **{"seed": i, **row}) for i, row in enumerate(rows)]


def _concat_vision(samples: list[dict]) -> dict:
    out = {}
    for key in VISION_KEYS:
        chunks = [s[key] for s in samples if key in s]
        if chunks:
            out[key] = torch.cat(chunks)
    return out


def build_batch(cfg: MiMoVLConfig, rows: list[dict], left_pad: bool = True) -> dict:
    """The samples of ``rows`` padded into one batch (with attention_mask and mm_token_type_ids)."""
    samples = build_samples(cfg, rows)
    width = max(s["input_ids"].shape[1] for s in samples)
    ids = torch.full((len(samples), width), cfg.padding_id)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for i, s in enumerate(samples):
        n = s["input_ids"].shape[1]
        cols = slice(width - n, width) if left_pad else slice(0, n)
        ids[i, cols], mask[i, cols] = s["input_ids"][0], 1
    return {"input_ids": ids, "attention_mask": mask, **_concat_vision(samples),
            "mm_token_type_ids": token_types(cfg, ids)}


def pack(samples: list[dict]) -> tuple[dict, list[int]]:
    """Samples (from build_samples) concatenated into one row with ``cu_seqlens``; also their lengths."""
    lengths = [s["input_ids"].shape[1] for s in samples]
    row = {"input_ids": torch.cat([s["input_ids"] for s in samples], dim=1),
           "cu_seqlens": torch.tensor([0, *lengths]).cumsum(0).to(torch.int32), **_concat_vision(samples)}
    return row, lengths


def model_inputs(batch: dict) -> dict:
    """mimolab's inputs: the batch without mm_token_type_ids."""
    return {k: v for k, v in batch.items() if k != "mm_token_type_ids"}


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Largest absolute difference, over the positions where ``mask`` (B, S) is true."""
    d = (a - b).abs()
    return float((d[mask.bool()] if mask is not None else d).max())
