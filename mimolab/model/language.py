"""The MiMo-7B-style language model: a Qwen2 decoder (GQA, q/k/v bias, RMSNorm, SwiGLU) driven by
Qwen2.5-VL's 3D rotary positions, with a static KV cache for generation and optional MiMo-7B
multi-token-prediction (MTP) layers.

Shapes: hidden states (B, S, hidden); position_ids (3, B, S); the KV cache holds, per layer,
keys and values (B, kv_heads, max_len, head_dim) and is written at ``cache.length``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from mimolab.config import MiMoVLConfig, TextConfig
from mimolab.model.attention import attention
from mimolab.model.layers import RMSNorm, SwiGLU
from mimolab.model.positions import apply_rotary, mrope_cos_sin, text_inv_freq


@dataclass
class KVCache:
    """Preallocated keys/values for every layer; ``length`` tokens are filled (same for all rows)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, cfg: TextConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> "KVCache":
        shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        layers = cfg.num_hidden_layers
        return cls([torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)],
                   [torch.empty(shape, device=device, dtype=dtype) for _ in range(layers)])

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} tokens is full (needs {end})")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only some batch rows (finished sequences leave the batch)."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]

    def repeat_rows(self, n: int) -> None:
        """Each row becomes ``n`` consecutive rows (a prompt prefilled once, then sampled ``n`` times);
        only the ``length`` filled positions are copied."""
        def grow(t: torch.Tensor) -> torch.Tensor:
            out = t.new_empty((t.shape[0] * n, *t.shape[1:]))  # (B * n, kv_heads, max_len, head_dim)
            out[:, :, :self.length] = t[:, :, :self.length].repeat_interleave(n, dim=0)
            return out

        self.keys = [grow(k) for k in self.keys]
        self.values = [grow(v) for v in self.values]


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int, backend: str) -> None:
        super().__init__()
        self.layer_idx, self.backend = layer_idx, backend
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple, mask: torch.Tensor | None, cache: KVCache | None,
                cu_seqlens: torch.Tensor | None) -> torch.Tensor:
        B, S, _ = x.shape
        flat = x.reshape(B * S, -1)  # 2D inputs take the plain GEMM path: faster for decoding steps
        q = self.q_proj(flat).view(B, S, self.heads, self.head_dim).transpose(1, 2)  # (B, H, S, D)
        k = self.k_proj(flat).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(flat).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope  # (B, 1, S, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        out = attention(q, k, v, causal=True, mask=mask, backend=self.backend, cu_seqlens=cu_seqlens)
        return self.o_proj(out.reshape(B * S, -1)).view(B, S, -1)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int, backend: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx, backend)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, rope, mask=None, cache=None, cu_seqlens=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, cu_seqlens)
        return x + self.mlp(self.post_attention_layernorm(x).view(-1, x.shape[-1])).view(x.shape)


class MTPLayer(nn.Module):
    """MiMo-7B's multi-token prediction: from the hidden state at t and the embedding of token t+1,
    predict token t+2 (norm both, concatenate, Linear 2h->h, one decoder layer, norm)."""

    def __init__(self, cfg: TextConfig, backend: str) -> None:
        super().__init__()
        self.token_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.hidden_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.input_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.layer = DecoderLayer(cfg, layer_idx=0, backend=backend)
        self.final_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)

    def forward(self, hidden, next_embeds, rope, mask=None, cu_seqlens=None) -> torch.Tensor:
        x = self.input_proj(torch.cat([self.hidden_norm(hidden), self.token_norm(next_embeds)], dim=-1))
        return self.final_norm(self.layer(x, rope, mask, None, cu_seqlens))


class LanguageModel(nn.Module):
    """Embeddings, decoder layers and the final norm (the head lives in the VLM)."""

    def __init__(self, cfg: MiMoVLConfig) -> None:
        super().__init__()
        t = cfg.text
        self.cfg = t
        self.embed_tokens = nn.Embedding(t.vocab_size, t.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(t, i, cfg.attn_implementation) for i in range(t.num_hidden_layers))
        self.norm = RMSNorm(t.hidden_size, eps=t.rms_norm_eps)
        self.mtp_layers = nn.ModuleList(MTPLayer(t, cfg.attn_implementation) for _ in range(t.num_mtp_layers))
        self.gradient_checkpointing = False

    def rope(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # computed per call (head_dim/2 numbers): no buffer to rebuild after loading on the meta device
        inv_freq = text_inv_freq(self.cfg.head_dim, self.cfg.rope_theta).to(position_ids.device)
        cos, sin = mrope_cos_sin(position_ids, inv_freq, self.cfg.mrope_section, dtype)
        return cos[:, None], sin[:, None]  # (B, 1, S, D): broadcast over heads

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states after the last layer, *before* the final ``norm`` (the MTP layers start from
        them; the VLM applies ``norm`` for the head)."""
        rope = self.rope(position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, rope, mask, None, cu_seqlens, use_reentrant=False)
            else:
                x = layer(x, rope, mask, cache, cu_seqlens)
        if cache is not None:
            cache.length += inputs_embeds.shape[1]
        return x
