"""Qwen2.5-ViT, the vision encoder of MiMo-VL (Qwen2.5-VL report, sec. 2.1).

pixel_values (N, C * temporal_patch * patch * patch) hold N flattened patches of all images and
videos of a batch, as the image processor emits them; grid_thw (n_images, 3) gives each one's
(temporal patches, patch rows, patch columns). Steps:
1. Conv3d patch embedding (kernel = stride = (2, 14, 14): two frames per temporal patch).
2. Reorder the patches window by window (``vision_window_index``) so each window is contiguous.
3. Blocks of RMSNorm -> attention with 2D rope -> RMSNorm -> SwiGLU (with bias). Most blocks attend
   within a window only; ``fullatt_block_indexes`` attend across a whole frame.
4. The projector merges each 2x2 block of patches into one token; undo the window order.
Output: (N / 4, out_hidden_size) tokens, one per ``<|image_pad|>`` / ``<|video_pad|>`` placeholder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mimolab.config import MiMoVLConfig, VisionConfig
from mimolab.model.attention import (
    additive, build_mask, flash_available, layer_attention, own_storage, segment_ids_from_cu_seqlens,
    segments_without_mask,
)
from mimolab.model.layers import RMSNorm, SwiGLU, compiled_or_eager
from mimolab.model.positions import (
    apply_rotary, vision_frame_cu_seqlens, vision_rotary_positions, vision_window_index,
)
from mimolab.model.projector import build_projector


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.shape = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        kernel = self.shape[1:]
        self.proj = nn.Conv3d(cfg.in_channels, cfg.hidden_size, kernel_size=kernel, stride=kernel, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(pixel_values.device.type):
            # the kernel covers the whole patch (kernel = stride), so the convolution is a matrix product of the
            # flattened patches (N, C * T * P * P) with the flattened kernel: the same sums, forward + backward in a
            # quarter of the time on a CPU in bfloat16. (In float32 the convolution: transformers' rounding.)
            weight = self.proj.weight.view(self.proj.out_channels, -1)  # (hidden, C * T * P * P)
            return F.linear(pixel_values.reshape(-1, weight.shape[1]), weight)  # (N, hidden)
        x = pixel_values.view(-1, *self.shape).to(self.proj.weight.dtype)
        return self.proj(x).flatten(1)  # (N, hidden): the kernel covers the whole patch


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig, backend: str) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=True)
        self.backend = backend

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segments: dict) -> torch.Tensor:
        n = x.shape[0]
        qkv = self.qkv(x).view(n, 3, self.num_heads, -1)
        # rope in float32 as the reference does, then back to the activation dtype; q and k in one go
        q, k = apply_rotary(qkv[:, :2].float(), cos[:, None], sin[:, None]).to(x.dtype).unbind(1)
        v = qkv[:, 2]  # each (N, heads, head_dim)
        use_flash = self.backend == "flash_attention_2" and flash_available()
        if segments["batch"] > 1 and not use_flash:  # equal segments: (N, h, d) -> (segments, h, L, d)
            b = segments["batch"]
            q, k, v = (t.view(b, n // b, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
            return self.proj(layer_attention(q, k, v, causal=False, backend=self.backend).reshape(n, -1))
        q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))  # (1, heads, N, head_dim)
        # without a mask, cu_seqlens alone makes the segments attend one by one (attention.attend_per_segment)
        out = layer_attention(q, k, v, causal=False, mask=segments["mask"], backend=self.backend,
                              cu_seqlens=segments["cu_seqlens"], max_seqlen=segments["max_seqlen"])
        return self.proj(out.reshape(n, -1))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig, backend: str) -> None:
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.attn = VisionAttention(cfg, backend)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, segments: dict) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, segments)
        return x + self.mlp(self.norm2(x))


MAX_MASKED_PATCHES = 4096  # above this a block-diagonal mask (N^2) costs more than a loop over segments


def _segments(cu_seqlens: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Attention restricted to each segment (window or frame) of the packed patch sequence: one
    call with a block-diagonal mask for small inputs on a GPU, a loop over segments for large ones
    and on a CPU (``segments_without_mask``)."""
    cu_seqlens = cu_seqlens.to(device)
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    equal = bool((lengths == lengths[0]).all())  # e.g. same-size images: segments become a batch
    loop = len(lengths) > 1 and not equal and (n > MAX_MASKED_PATCHES or segments_without_mask(device))
    mask = None
    if len(lengths) > 1 and not equal and not loop:
        mask = build_mask(n, n, causal=False, segment_ids=segment_ids_from_cu_seqlens(cu_seqlens, n)[None])
    return {"cu_seqlens": cu_seqlens, "max_seqlen": int(lengths.max()), "mask": additive(mask, dtype),
            "batch": len(lengths) if equal else 1}


class VisionTransformer(nn.Module):
    """Qwen2.5-ViT + projector (the projector lives here as ``merger``, as in the checkpoints)."""

    def __init__(self, cfg: MiMoVLConfig) -> None:
        super().__init__()
        v = cfg.vision
        self.cfg = v
        self.patch_embed = PatchEmbed(v)
        self.blocks = nn.ModuleList(VisionBlock(v, cfg.attn_implementation) for _ in range(v.depth))
        self.merger = build_projector(v, cfg.projector_type)
        self.gradient_checkpointing = False
        self.compiled: list[Callable] | None = None  # the blocks compiled for training forwards (compile_layers)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    def rotary(self, grid_thw: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        pos = vision_rotary_positions(grid_thw, self.cfg.spatial_merge_size).to(device)  # (N, 2)
        spatial_dim = self.cfg.head_dim // 2  # rows and columns each rotate a quarter of the head
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, spatial_dim, 2, device=device).float() / spatial_dim))
        freqs = (pos[..., None].float() * inv_freq).flatten(1)  # (N, head_dim/2): [h | w]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # (N, 1, head_dim), broadcast over heads
        return emb.cos(), emb.sin()

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """(N, patch_dim) flattened patches -> (N/4, out_hidden) merged tokens, in the processor's order."""
        x, window_index = self.encode(pixel_values, grid_thw)
        merged = self.merger(x)  # (N/4, out_hidden)
        return merged[torch.argsort(window_index)]

    def token_features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """The ViT's output before the projector, averaged over each 2x2 merge unit: (N/4, hidden), one
        row per language-model token in the processor's order (what the vision warm-up trains on)."""
        x, window_index = self.encode(pixel_values, grid_thw)
        unit = self.cfg.spatial_merge_size**2
        return x.reshape(-1, unit, x.shape[-1]).mean(1)[torch.argsort(window_index)]

    def encode(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ViT blocks' output (N, hidden) in window order, and the window order of the merge units."""
        v = self.cfg
        grid_thw = grid_thw.cpu().long()
        n_patches = int(grid_thw.prod(-1).sum())
        patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size**2
        if pixel_values.dim() != 2 or pixel_values.shape != (n_patches, patch_dim):
            raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)} but the grids {grid_thw.tolist()} "
                             f"need ({n_patches}, {patch_dim}) flattened patches")
        if (grid_thw[:, 1:] % v.spatial_merge_size).any():
            raise ValueError(f"grid sizes {grid_thw.tolist()} must be multiples of spatial_merge_size")
        device, unit = pixel_values.device, v.spatial_merge_size**2
        window_index, cu_window = vision_window_index(grid_thw, v.spatial_merge_size, v.window_size, v.patch_size)
        window_index = window_index.to(device)

        def to_window_order(t: torch.Tensor) -> torch.Tensor:  # permute whole 2x2 merge units
            return t.reshape(n_patches // unit, unit, *t.shape[1:])[window_index].reshape(t.shape)

        x = to_window_order(self.patch_embed(pixel_values))
        cos, sin = (to_window_order(t) for t in self.rotary(grid_thw, device))
        window_seg = _segments(cu_window, n_patches, x.dtype, device)
        frame_seg = _segments(vision_frame_cu_seqlens(grid_thw), n_patches, x.dtype, device)
        # frame segments must be expressed in window order too: windows never straddle frames
        blocks = compiled_or_eager(self.blocks, self.compiled)
        if blocks is not self.blocks:  # a compiled block's inputs: tensors of their own storage (own_storage)
            x, cos, sin = own_storage(x), own_storage(cos), own_storage(sin)
        for i, block in enumerate(blocks):
            segments = frame_seg if i in v.fullatt_block_indexes else window_seg
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, segments, use_reentrant=False)
            else:
                x = block(x, cos, sin, segments)
        return x, window_index
