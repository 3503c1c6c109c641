"""The projector between the ViT and the language model (MiMo-VL: a randomly initialised MLP).

``PatchMerger`` is the released checkpoints' layout (transformers' ``Qwen2_5_VLPatchMerger``):
RMSNorm over each patch, concatenate each 2x2 block of neighbouring patches (4 x 1280 = 5120),
Linear 5120->5120, GELU, Linear 5120->4096. ``SwiGLUMerger`` is the two-layer SwiGLU variant one
of the source summaries describes; it is mimolab-only (transformers cannot load it).
The vision encoder emits patches merge-block-major, so a 2x2 block is 4 consecutive rows.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mimolab.config import VisionConfig
from mimolab.model.layers import RMSNorm, SwiGLU


class PatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.merged_dim = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = RMSNorm(cfg.hidden_size, eps=1e-6)
        # indices 0 and 2 as in nn.Sequential(Linear, GELU, Linear): checkpoint keys mlp.0 / mlp.2
        self.mlp = nn.Sequential(
            nn.Linear(self.merged_dim, self.merged_dim), nn.GELU(), nn.Linear(self.merged_dim, cfg.out_hidden_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.merged_dim))  # (N, C) -> (N/4, 4C) -> (N/4, out)


class SwiGLUMerger(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.merged_dim = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = RMSNorm(cfg.hidden_size, eps=1e-6)
        self.mlp = SwiGLU(self.merged_dim, self.merged_dim, cfg.out_hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.merged_dim))


def build_projector(cfg: VisionConfig, projector_type: str) -> nn.Module:
    return {"patch_merger": PatchMerger, "swiglu": SwiGLUMerger}[projector_type](cfg)
