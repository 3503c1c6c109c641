"""Attention backends shared by the vision encoder and the language model.

One function, ``attention(q, k, v, ...)``, three interchangeable backends:
- ``sdpa`` (default): ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask;
- ``eager``: the textbook softmax(QK^T / sqrt(d)) V in float32, the reference the tests trust;
- ``flash_attention_2``: ``flash_attn_varlen_func`` on a GPU when the package is installed
  (segments given by ``cu_seqlens``); falls back to ``sdpa`` elsewhere with a one-time warning.

Masks are boolean, ``True`` = may attend. ``segment_ids`` (one id per token, per row) expresses both
packing (several samples in one row) and the vision encoder's windows: a token attends only to
tokens of its own segment. Padding is a segment id of -1 on the key side.

Without a mask, ``cu_seqlens`` alone can carry the segments: ``sdpa`` and ``eager`` then attend segment by
segment (``attend_per_segment``), the work of sum(L_i^2) instead of the mask's S^2 over the whole row. On a
CPU (``segments_without_mask``) packed rows and the ViT's windows take that path: with the row's dense mask,
SDPA was 40% of a cpu-preset training step (benchmarks/README.md, "CPU training (AMX bf16)").
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

try:  # optional GPU extra
    from flash_attn import flash_attn_varlen_func
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flash_attn_varlen_func = None

BACKENDS = ("sdpa", "eager", "flash_attention_2")


def flash_available() -> bool:
    return flash_attn_varlen_func is not None and torch.cuda.is_available()
_warned_flash = False


def check_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> None:
    """Packed segments must cover the row exactly: a short cover would leave tokens in no segment."""
    covered = int(cu_seqlens[-1] - cu_seqlens[0])
    if covered != total:
        raise ValueError(f"cu_seqlens covers {covered} tokens but the sequence has {total}")


def segment_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(n+1,) cumulative lengths -> (total,) segment index of every token."""
    check_cu_seqlens(cu_seqlens, total)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(1, 1, q_len, k_len): the q_len queries are the last q_len of the k_len keys."""
    q_pos = torch.arange(q_len, device=device) + (k_len - q_len)
    return (torch.arange(k_len, device=device)[None, :] <= q_pos[:, None])[None, None]


def build_mask(
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    key_padding: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    q_offset: int = 0,
) -> torch.Tensor | None:
    """Boolean mask (B or 1, 1, q_len, k_len); None when plain causal/full attention suffices.

    key_padding: (B, k_len) with 1 for real tokens. segment_ids: (B or 1, k_len); the queries are the
    last q_len keys (``q_offset`` = k_len - q_len for KV-cache decoding).
    """
    if key_padding is None and segment_ids is None:
        return None
    device = (key_padding if key_padding is not None else segment_ids).device
    mask = torch.ones(1, 1, q_len, k_len, dtype=torch.bool, device=device)
    q_pos = torch.arange(q_len, device=device) + q_offset
    if causal:
        mask = mask & (torch.arange(k_len, device=device)[None, :] <= q_pos[:, None])
    if segment_ids is not None:
        seg_q = segment_ids[:, q_offset:q_offset + q_len]
        mask = mask & (seg_q[:, None, :, None] == segment_ids[:, None, None, :])
    if key_padding is not None:
        mask = mask & key_padding.bool()[:, None, None, :]
        # A padded query row would attend to nothing and softmax would return NaN; let it see itself
        # (its output is never used, and this keeps gradients finite).
        diag = q_pos[:, None] == torch.arange(k_len, device=device)[None, :]
        mask = mask | diag
    return mask


def additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean mask -> 0 / -inf float mask, converted once per forward instead of once per layer."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    mask: torch.Tensor | None = None,
    backend: str = "sdpa",
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    segment_prefix: list[int] | None = None,
) -> torch.Tensor:
    """q: (B, H, Q, D); k, v: (B, KVH, K, D) with H a multiple of KVH (GQA). Returns (B, Q, H, D).

    ``mask`` (boolean from ``build_mask``, or its ``additive`` float form) overrides ``causal``. ``cu_seqlens``
    (B must be 1, Q == K) gives the segments to flash-attn, and to the other backends when there is no mask;
    with a mask, the mask must express the same segments. ``segment_prefix`` (with ``cu_seqlens``, no mask): for
    each segment, the earlier segment it continues, or -1: its queries attend to that segment's keys first, then
    causally to its own (a GRPO group's completions each continue their one shared prompt, ``attend_per_segment``).
    """
    if segment_prefix is not None and mask is not None:
        raise ValueError("segment_prefix needs the segments without a mask (mask must be None)")
    if (backend == "flash_attention_2" and q.is_cuda and flash_attn_varlen_func is not None and cu_seqlens is not None
            and segment_prefix is None):
        return _flash_varlen(q, k, v, causal=causal, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
    if backend == "flash_attention_2":
        global _warned_flash
        if not _warned_flash:
            warnings.warn("flash-attn unavailable here (needs a CUDA GPU and the `gpu` extra): using SDPA")
            _warned_flash = True
        backend = "sdpa"
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # under bf16 autocast on a CPU: attention in float32, as SDPA's CPU kernels ran forward+backward
        # 1.2-2x slower in bfloat16 than in float32 at packed samples' lengths (64-256 tokens; benchmarks/README.md)
        with torch.autocast("cpu", enabled=False):
            return attention(q.float(), k.float(), v.float(), causal=causal, mask=mask, backend=backend,
                             cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, segment_prefix=segment_prefix)
    if mask is None and cu_seqlens is not None and (len(cu_seqlens) > 2 or segment_prefix is not None):
        return attend_per_segment(q, k, v, causal=causal, lengths=(cu_seqlens[1:] - cu_seqlens[:-1]).tolist(),
                                  backend=backend, prefix=segment_prefix)
    n_rep = q.shape[1] // k.shape[1]
    if backend == "sdpa" and q.shape[2] == 1 and not q.requires_grad:
        return _single_query(q, k, v, mask, n_rep)
    if backend == "eager":
        return _eager(q, k, v, causal=causal, mask=mask, n_rep=n_rep)
    if backend != "sdpa":
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    is_causal = causal and mask is None and q.shape[2] == k.shape[2]
    if causal and mask is None and 1 < q.shape[2] < k.shape[2]:
        # decoding without padding: the new queries are the last q_len keys
        mask = causal_mask(q.shape[2], k.shape[2], q.device)
    # enable_gqa shares each key/value head across its query heads without copying the cache
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=n_rep > 1)
    return out.transpose(1, 2)


@torch.compiler.disable
def layer_attention(*args, **kwargs) -> torch.Tensor:
    """``attention`` as the model's layers call it. Inside a compiled layer (``MiMoVL.compile_layers``) it runs
    eager: its per-segment loop reads the packing's lengths, which a graph would be recompiled for. Its output is
    never a view: a compiled layer's guards on a view would also check the view's base, so a view from one row
    (SDPA's transposed output, a row of one sample) and a new tensor from another (the segments concatenated)
    would compile the rest of the layer twice. (The copy is the one the layer's reshape made anyway.)"""
    return own_storage(attention(*args, **kwargs))


def own_storage(x: torch.Tensor) -> torch.Tensor:
    """``x``, copied if it is a view: what a compiled layer receives (``layer_attention``'s output, and what a stack
    of compiled layers starts from), so that every call sees a tensor of its own storage (one graph for all)."""
    return x if x._base is None else x.clone(memory_format=torch.contiguous_format)


def segments_without_mask(device: torch.device) -> bool:
    """Whether the segments of a packed sequence attend one by one (``attend_per_segment``) instead of through a
    block-diagonal mask: on a CPU, where the kernels gain nothing from one large call. (On a GPU a mask up to
    ``vision.MAX_MASKED_PATCHES``, or flash-attn's varlen kernel; not measured per segment there.)"""
    return device.type == "cpu"


def attend_per_segment(q, k, v, *, causal: bool, lengths: list[int], backend: str = "sdpa",
                       prefix: list[int] | None = None) -> torch.Tensor:
    """Each segment of a packed sequence (``lengths`` along dim 2 of (1, H, S, D)) attends to itself alone:
    plain (causal) attention per segment, no mask. ``prefix[j] >= 0``: segment j continues that earlier segment,
    whose keys and values come before its own (its queries are the last of the joined keys: the causal mask is
    offset); the prefix's gradient sums over every segment that reads it. Returns (1, S, H, D) as ``attention``."""
    qs, ks, vs = (t.split(lengths, dim=2) for t in (q, k, v))
    out = []
    for j, (q_j, k_j, v_j) in enumerate(zip(qs, ks, vs)):
        p = prefix[j] if prefix is not None else -1
        if p >= 0:
            if not p < j or prefix[p] >= 0:
                raise ValueError(f"segment {j} continues segment {p}: a prefix must come earlier and continue none")
            k_j, v_j = torch.cat([ks[p], k_j], dim=2), torch.cat([vs[p], v_j], dim=2)
        out.append(attention(q_j, k_j, v_j, causal=causal, backend=backend))
    return torch.cat(out, dim=1)


def _single_query(q, k, v, mask: torch.Tensor | None, n_rep: int) -> torch.Tensor:
    """One decoding step. Query heads are grouped onto their key/value head instead of copying the cache:
    a group's queries are one SDPA call's query rows over its head's keys (no causal mask: every cached
    key is in the past). One kernel instead of two small matmuls and a softmax: a cpu-preset decoding
    step about 5% faster (benchmarks/profile_decode.py)."""
    B, H, _, D = q.shape
    q = q.view(B, H // n_rep, n_rep, D)  # (B, KVH, group, D)
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # SDPA's CPU kernel computes bf16 slower than float32; two bf16 matmuls around a float32 softmax read the
        # half-size cache (its keys transposed, KVCache) at the matmul units' speed: at 32 rows over 230 cached
        # tokens a step's attention 1.65x faster than float32 SDPA over a float32 cache (profile_decode.py)
        scores = torch.matmul(q, k.transpose(-1, -2)).float().mul_(D ** -0.5)
        if mask is not None:
            scores.add_(mask)  # in place: the float32 scores are this call's own
        out = torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # mask (B or 1, 1, 1, K): padding only
    return out.view(B, 1, H, D)  # (B, KVH, group, D) -> (B, 1, H, D)


def _eager(q, k, v, *, causal: bool, mask: torch.Tensor | None, n_rep: int) -> torch.Tensor:
    k = k.repeat_interleave(n_rep, dim=1)
    v = v.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is None and causal:
        mask = causal_mask(q.shape[2], k.shape[2], q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v.float()).to(q.dtype).transpose(1, 2)


def _flash_varlen(q, k, v, *, causal: bool, cu_seqlens: torch.Tensor, max_seqlen: int | None) -> torch.Tensor:
    # (1, H, T, D) -> (T, H, D): flash-attn's varlen layout, segments given by cu_seqlens
    q_, k_, v_ = (t[0].transpose(0, 1) for t in (q, k, v))
    cu = cu_seqlens.to(torch.int32)
    if max_seqlen is None:
        max_seqlen = int((cu[1:] - cu[:-1]).max())
    out = flash_attn_varlen_func(q_, k_, v_, cu, cu, max_seqlen, max_seqlen, causal=causal)
    return out.unsqueeze(0)
