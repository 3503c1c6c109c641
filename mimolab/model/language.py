"""The MiMo-7B-style language model: a Qwen2 decoder (GQA, q/k/v bias, RMSNorm, SwiGLU) driven by
Qwen2.5-VL's 3D rotary positions, with a static KV cache for generation and optional MiMo-7B
multi-token-prediction (MTP) layers.

Shapes: hidden states (B, S, hidden); position_ids (3, B, S); the KV cache holds, per layer,
keys and values (B, kv_heads, max_len, head_dim) and is written at ``cache.length``. ``Decoder`` is
the generation step over that cache (one token per row), built from the same modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mimolab.config import MiMoVLConfig, TextConfig
from mimolab.model.attention import attention, layer_attention, own_storage
from mimolab.model.layers import RMSNorm, SwiGLU, compiled_or_eager
from mimolab.model.positions import apply_rotary, mrope_cos_sin, text_inv_freq


@dataclass
class KVCache:
    """Preallocated keys/values for every layer; ``length`` tokens are filled (same for all rows).

    Keys and values are (B, kv_heads, max_len, head_dim) tensors. A bfloat16 cache on a CPU stores the keys
    transposed underneath (``keys[i]`` is a view of a (B, kv_heads, head_dim, max_len) buffer): a decoding step's
    q @ k^T then reads each row's filled keys as one matrix, where CPU bf16 matmuls copy a slice of the usual
    layout first (attention.py, ``_single_query``)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, cfg: TextConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> "KVCache":
        shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        layers = cfg.num_hidden_layers
        transposed = torch.device(device).type == "cpu" and dtype == torch.bfloat16
        return cls([_buffer(shape, device, dtype, transposed) for _ in range(layers)],
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
        """Keep only some batch rows (finished sequences leave the batch); only the ``length`` filled
        positions are copied, the rest of the new buffers stays unwritten as in ``empty``."""
        def keep(t: torch.Tensor) -> torch.Tensor:
            batch = int(rows.sum()) if rows.dtype == torch.bool else len(rows)
            out = _buffer((batch, *t.shape[1:]), t.device, t.dtype, transposed=t.stride(-1) != 1)
            out[:, :, :self.length] = t[rows, :, :self.length]
            return out

        self.keys = [keep(k) for k in self.keys]
        self.values = [keep(v) for v in self.values]

    def repeat_rows(self, n: int) -> None:
        """Each row becomes ``n`` consecutive rows (a prompt prefilled once, then sampled ``n`` times);
        only the ``length`` filled positions are copied."""
        def grow(t: torch.Tensor) -> torch.Tensor:
            out = _buffer((t.shape[0] * n, *t.shape[1:]), t.device, t.dtype, transposed=t.stride(-1) != 1)
            out[:, :, :self.length] = t[:, :, :self.length].repeat_interleave(n, dim=0)
            return out

        self.keys = [grow(k) for k in self.keys]
        self.values = [grow(v) for v in self.values]


def _buffer(shape: tuple, device, dtype: torch.dtype, transposed: bool) -> torch.Tensor:
    """An uninitialised (B, kv_heads, max_len, head_dim) tensor; ``transposed``: over a (B, kv_heads, head_dim,
    max_len) buffer."""
    if not transposed:
        return torch.empty(shape, device=device, dtype=dtype)
    return torch.empty((*shape[:2], shape[3], shape[2]), device=device, dtype=dtype).transpose(-1, -2)


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)  # a no-op cast still costs a dispatch per matmul


def fused_linear(modules: list[nn.Module], dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """One matmul for several ``nn.Linear`` reading the same input (their weights stacked, in ``dtype``;
    the outputs equal the separate products concatenated). Anything else (peft's LoRA layers, quantized ones) is
    called as it is, in its own dtype, and the outputs concatenated."""
    plain = all(type(m) is nn.Linear and type(m.weight.data) is torch.Tensor for m in modules)  # not quantized
    if plain and len({m.bias is None for m in modules}) == 1:
        weight = torch.cat([m.weight for m in modules]).to(dtype)
        bias = None if modules[0].bias is None else torch.cat([m.bias for m in modules]).to(dtype)
        cpu = weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
        if cpu and dtype in (torch.float32, torch.bfloat16):
            # a decoding step reads every weight once for a few rows: prepacked once into oneDNN's blocked
            # layout, the products skip re-packing the weight at each call (15-25% of a cpu-preset step,
            # benchmarks/profile_decode.py)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
            return lambda x: torch.ops.mkldnn._linear_pointwise(_as(x, dtype), packed, bias, "none", [], "")
        return lambda x: F.linear(_as(x, dtype), weight, bias)
    # a 4-bit weight's dtype is its packed storage (uint8): its layer casts the input itself
    return lambda x: torch.cat([m(x.to(m.weight.dtype) if m.weight.is_floating_point() else x) for m in modules],
                               dim=-1)


def rms_norm(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for float32 activations as one kernel (the same numbers as RMSNorm's float32 steps;
    a decoding step runs nine norms on a few rows, where each separate op is mostly call overhead)."""
    if x.dtype != torch.float32 or type(norm) is not RMSNorm:
        return norm(x)
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.eps)


class Decoder:
    """The decoding step: one new token per row on top of a filled ``KVCache``, what generation runs
    hundreds of times per prompt. Same modules and functions as ``LanguageModel.forward`` (norms,
    rope, ``apply_rotary``, ``KVCache.update``, ``attention``), with what a single token makes
    possible: q/k/v and gate/up each one matmul (weights stacked once per generation), 2D
    activations (no sequence axis), positions that are text positions (one id per row), and a
    padding mask given already in additive form. ``dtype`` is the matmuls' (bfloat16 on a float32 model
    runs them in half precision as autocast would; norms, rope, attention over the cache and the
    residual stream stay in the model's dtype)."""

    def __init__(self, language_model: "LanguageModel", lm_head: nn.Linear, dtype: torch.dtype | None = None,
                 max_position: int = 0) -> None:
        self.lm, self.dtype = language_model, dtype or lm_head.weight.dtype
        cfg = language_model.cfg
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.backend = language_model.layers[0].self_attn.backend if len(language_model.layers) else "sdpa"
        self.layers = []
        for layer in language_model.layers:
            a, m = layer.self_attn, layer.mlp
            fuse = lambda *modules: fused_linear(list(modules), self.dtype)  # noqa: E731
            self.layers.append((layer.input_layernorm, fuse(a.q_proj, a.k_proj, a.v_proj), fuse(a.o_proj),
                                layer.post_attention_layernorm, fuse(m.gate_proj, m.up_proj), fuse(m.down_proj)))
        self.head = fused_linear([lm_head], self.dtype)
        self.rope_table = None
        if max_position:  # a text position's three ids are equal: cos/sin of positions 0..max_position - 1, once
            device = language_model.embed_tokens.weight.device
            positions = torch.arange(max_position, device=device).view(1, 1, -1).expand(3, 1, -1)
            dtype = language_model.embed_tokens.weight.dtype
            self.rope_table = [t[0, 0] for t in language_model.rope(positions, dtype)]  # (max_position, D) each

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (R,), positions (R,), mask (R, 1, 1, >= cache.length + 1) additive or None -> logits (R, V)."""
        x = self.lm.embed_tokens(tokens)  # (R, hidden)
        if self.rope_table is not None:  # positions < max_position (the caller's bound)
            rope = tuple(t[positions][:, None] for t in self.rope_table)  # (R, 1, D): broadcast over heads
        else:
            rope = tuple(t[:, 0] for t in self.lm.rope(positions.view(1, -1, 1).expand(3, -1, 1), x.dtype))
        if mask is not None:
            mask = mask[..., :cache.length + 1]
        for i, (attn_norm, qkv, o, mlp_norm, gate_up, down) in enumerate(self.layers):
            x = x + o(self._attend(i, qkv(rms_norm(attn_norm, x)), rope, cache, mask))
            gate, up = gate_up(rms_norm(mlp_norm, x)).chunk(2, dim=-1)
            x = x + down(F.silu(gate) * up)
        cache.length += 1
        return self.head(rms_norm(self.lm.norm, x))

    def _attend(self, layer: int, qkv: torch.Tensor, rope: tuple, cache: KVCache,
                mask: torch.Tensor | None) -> torch.Tensor:
        """(R, (H + 2 KVH) * D) projections -> (R, H * D) attention output over the cache."""
        R, H, KVH, D = qkv.shape[0], self.heads, self.kv_heads, self.head_dim
        qkv = qkv.view(R, H + 2 * KVH, D)
        qk = _as(apply_rotary(qkv[:, :H + KVH], *rope), cache.keys[layer].dtype)  # q and k heads, to the cache's dtype
        k, v = cache.update(layer, qk[:, H:, None], qkv[:, H + KVH:, None])  # (R, KVH, length + 1, D)
        out = attention(qk[:, :H, None], k, v, causal=True, mask=mask, backend=self.backend)  # (R, 1, H, D)
        return out.reshape(R, H * D)


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
                cu_seqlens: torch.Tensor | None, segment_prefix: list[int] | None = None) -> torch.Tensor:
        B, S, _ = x.shape
        flat = x.reshape(B * S, -1)  # 2D inputs take the plain GEMM path: faster for decoding steps
        q = self.q_proj(flat).view(B, S, self.heads, self.head_dim).transpose(1, 2)  # (B, H, S, D)
        k = self.k_proj(flat).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(flat).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope  # (B, 1, S, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            cached_k, cached_v = cache.update(self.layer_idx, k, v)
            if cache.length:  # earlier tokens are cached: attend to all of them, in this forward's dtype (the
                k, v = _as(cached_k, q.dtype), _as(cached_v, q.dtype)  # cache may hold bf16, generation.py)
        out = layer_attention(q, k, v, causal=True, mask=mask, backend=self.backend, cu_seqlens=cu_seqlens,
                              segment_prefix=segment_prefix)
        return self.o_proj(out.reshape(B * S, -1)).view(B, S, -1)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int, backend: str) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx, backend)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, rope, mask=None, cache=None, cu_seqlens=None, segment_prefix=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache, cu_seqlens, segment_prefix)
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
        self.compiled: list[Callable] | None = None  # the layers compiled for training forwards (compile_layers)

    def rope(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # computed per call (head_dim/2 numbers): no buffer to rebuild after loading on the meta device
        inv_freq = text_inv_freq(self.cfg.head_dim, self.cfg.rope_theta).to(position_ids.device)
        cos, sin = mrope_cos_sin(position_ids, inv_freq, self.cfg.mrope_section, dtype)
        return cos[:, None], sin[:, None]  # (B, 1, S, D): broadcast over heads

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, cu_seqlens: torch.Tensor | None = None,
                segment_prefix: list[int] | None = None) -> torch.Tensor:
        """Hidden states after the last layer, *before* the final ``norm`` (the MTP layers start from
        them; the VLM applies ``norm`` for the head). ``segment_prefix``: see ``attention``."""
        rope = self.rope(position_ids, inputs_embeds.dtype)
        layers = compiled_or_eager(self.layers, self.compiled, cache is None)
        x = inputs_embeds
        if layers is not self.layers:  # a compiled layer's inputs: tensors of their own storage (own_storage)
            x = own_storage(x)
            cu_seqlens = cu_seqlens if cu_seqlens is None else own_storage(cu_seqlens)
        for layer in layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, rope, mask, None, cu_seqlens, segment_prefix, use_reentrant=False)
            else:
                x = layer(x, rope, mask, cache, cu_seqlens, segment_prefix)
        if cache is not None:
            cache.length += inputs_embeds.shape[1]
        return x
