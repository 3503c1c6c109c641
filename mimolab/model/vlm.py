"""MiMoVL: the vision encoder, projector and language model joined (transformers'
``Qwen2_5_VLForConditionalGeneration``, same argument names and parameter names).

Image/video features replace the embeddings of their placeholder tokens (``<|image_pad|>``,
``<|video_pad|>``) in order; 3D positions come from ``positions.get_rope_index`` unless given.
Packed input: one row holding several samples, with ``cu_seqlens`` marking where each starts;
positions restart per sample and no token attends across a sample boundary, except where ``segment_prefix``
says a segment continues an earlier one (GRPO: each completion after its group's one prompt, rl/logprobs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mimolab.config import MiMoVLConfig
from mimolab.model.attention import (
    additive, build_mask, check_cu_seqlens, flash_available, segment_ids_from_cu_seqlens, segments_without_mask,
)
from mimolab.model.language import KVCache, LanguageModel
from mimolab.model.layers import compile_blocks
from mimolab.model.positions import get_rope_index
from mimolab.model.vision import VisionTransformer

IGNORE_INDEX = -100
PARTS = ("vision", "projector", "llm")  # what a training stage can train or freeze


def part_of(param_name: str) -> str:
    """Which part of MiMoVL a parameter belongs to (the projector lives at visual.merger)."""
    if param_name.startswith("visual.merger."):
        return "projector"
    if param_name.startswith("visual."):
        return "vision"
    return "llm"


@dataclass
class MiMoVLOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # after the final norm, (B, S, hidden)
    rope_deltas: torch.Tensor | None = None


class MiMoVL(nn.Module):
    def __init__(self, config: MiMoVLConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.language_model = LanguageModel(config)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        if config.text.tie_word_embeddings:
            self.lm_head.weight = self.language_model.embed_tokens.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module, std: float = 0.02) -> None:
        if isinstance(module, (nn.Linear, nn.Conv3d, nn.Embedding)) and module.weight.device.type != "meta":
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ construction and I/O
    @classmethod
    def from_preset(cls, name: str, **changes) -> "MiMoVL":
        return cls(MiMoVLConfig.from_name(name, **changes))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                        attn_implementation: str | None = None, quantize: str | None = None) -> "MiMoVL":
        """Load a local MiMo-VL / Qwen2.5-VL checkpoint directory (built on meta, then assigned). ``quantize``:
        "int8" (CPU or GPU), "int4" / "nf4" (GPU) for the language model's linear layers (``quantize.py``)."""
        from mimolab.model.checkpoint import load_pretrained
        from mimolab.model.quantize import check_quantize, quantize_model
        if quantize is not None:
            check_quantize(quantize, device)  # a bad mode or device fails before any weight is read
        model = load_pretrained(cls, path, dtype=dtype, device=device, attn_implementation=attn_implementation)
        return quantize_model(model, quantize) if quantize is not None else model

    def save_pretrained(self, path: str | Path, *, max_shard_bytes: int = 5 * 2**30) -> None:
        """Write a directory that transformers' Qwen2_5_VLForConditionalGeneration loads."""
        from mimolab.model.checkpoint import save_pretrained
        from mimolab.model.quantize import check_saveable
        check_saveable(self)
        save_pretrained(self, path, max_shard_bytes=max_shard_bytes)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.visual.gradient_checkpointing = enabled
        self.language_model.gradient_checkpointing = enabled

    def compile_layers(self, enabled: bool = True) -> None:
        """Training forwards run each decoder layer and ViT block through ``torch.compile`` (inductor): the layers'
        small elementwise ops (norms, rope, SwiGLU, residuals) and autocast's casts fuse into a few kernels (a bf16
        step of the cpu preset about 1.2x faster on one thread, but no faster in the main job's stage 3 on two;
        benchmarks/README.md, "Compiled layers"). Attention stays eager (``layer_attention`` is excluded from
        tracing): its per-segment loop reads the packing's lengths, which a graph would have to recompile for.
        Evaluation and generation run the layers eager (``compiled_or_eager``); the parameters and state-dict keys
        are the modules' own, so checkpoints are unchanged. The first training forward compiles (10-25 s for the
        cpu preset's layers on 2 cores)."""
        self.language_model.compiled = compile_blocks(self.language_model.layers) if enabled else None
        self.visual.compiled = compile_blocks(self.visual.blocks) if enabled else None

    # ------------------------------------------------------------------ pieces of the forward
    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_grid_thw: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
              video_grid_thw: torch.Tensor | None = None, *, image_features: torch.Tensor | None = None,
              video_features: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with image and video features written into their placeholders. ``image_features`` /
        ``video_features``: the vision tower's output for those pixels, computed already (GRPO runs it once per
        prompt for a group's rollouts), taken instead of the pixels."""
        embeds = self.language_model.embed_tokens(input_ids)
        for kind, pixels, grid, features, token in (
                ("image", pixel_values, image_grid_thw, image_features, self.config.image_token_id),
                ("video", pixel_values_videos, video_grid_thw, video_features, self.config.video_token_id)):
            slots = input_ids == token
            n_slots = int(slots.sum())
            if features is None:
                if pixels is None:
                    if n_slots:
                        raise ValueError(f"the text has {n_slots} {kind} placeholder tokens but no {kind} pixels were given")
                    continue
                if grid is None:
                    raise ValueError(f"{kind} pixels given without {kind}_grid_thw")
                features = self.visual(pixels.to(self.visual.dtype), grid)
            if features.shape[0] != n_slots:
                source = f"the grids {grid.tolist()} give" if grid is not None else "there are"
                raise ValueError(f"{kind} features and {kind} tokens do not match: {source} "
                                 f"{features.shape[0]} features, the text has {n_slots} placeholder tokens")
            # the features fill the placeholders in order, as masked_scatter would; index_copy's backward is a
            # gather where masked_scatter's is a masked_select over the whole sequence (1/5 of the time on a CPU)
            flat = embeds.reshape(-1, embeds.shape[-1])
            embeds = flat.index_copy(0, slots.reshape(-1).nonzero()[:, 0], features.to(embeds.dtype)).view_as(embeds)
        return embeds

    def rope_index(self, input_ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return get_rope_index(input_ids, image_token_id=c.image_token_id, video_token_id=c.video_token_id,
                              spatial_merge_size=c.vision.spatial_merge_size,
                              tokens_per_second=c.vision.tokens_per_second, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mtp_loss_weight: float = 0.3,
        inputs_embeds: torch.Tensor | None = None,
        segment_prefix: list[int] | None = None,
    ) -> MiMoVLOutput:
        """Arguments as transformers' Qwen2.5-VL, plus ``cu_seqlens`` for packed rows (B == 1) and
        ``cache`` for incremental decoding (then ``position_ids`` must be given for the new tokens and
        ``attention_mask`` must cover cached + new tokens). ``logits_to_keep`` > 0 computes logits
        for the last that many positions only; a 1D tensor, for those positions (as transformers): the
        trainer asks for the positions with a target, often a tenth of a packed row. ``inputs_embeds``: as
        transformers, the embeddings (``embed``'s output) instead of computing them; ``input_ids`` still give the
        positions (when ``position_ids`` are not given) and the MTP layers' inputs. ``segment_prefix`` (with
        ``cu_seqlens`` and ``position_ids``): segments that continue an earlier one (``attention``), as GRPO packs
        a group's completions after their one prompt."""
        B, S = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + S > self.config.text.max_position_embeddings:
            raise ValueError(f"sequence of {past + S} tokens is longer than the context "
                             f"(max_position_embeddings = {self.config.text.max_position_embeddings})")
        if attention_mask is not None and tuple(attention_mask.shape) != (B, past + S):
            # checked before the positions, which would fail on it with an opaque IndexError
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} tokens, expected {past + S} "
                             f"(shape {tuple(attention_mask.shape)}, expected {(B, past + S)})")
        if segment_prefix is not None:
            if cu_seqlens is None or position_ids is None or labels is not None:
                raise ValueError("segment_prefix needs cu_seqlens and position_ids (a continued segment's positions go "
                                 "on from its prefix's), and no labels (its loss is the caller's)")
            if len(segment_prefix) != len(cu_seqlens) - 1:
                raise ValueError(f"segment_prefix has {len(segment_prefix)} entries for {len(cu_seqlens) - 1} segments")
            check_cu_seqlens(cu_seqlens, S)
        if inputs_embeds is not None:
            embeds = inputs_embeds
        elif past and pixel_values is None and pixel_values_videos is None:
            # decoding: generated ids are text even if an untrained model emits a placeholder id
            embeds = self.language_model.embed_tokens(input_ids)
        else:
            embeds = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)
        rope_deltas = None
        if position_ids is None:
            if past:
                raise ValueError("position_ids are required when decoding with a KV cache")
            position_ids, rope_deltas = self.rope_index(
                input_ids, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                second_per_grid_ts=second_per_grid_ts, attention_mask=attention_mask, cu_seqlens=cu_seqlens)
        mask = None if segment_prefix is not None else additive(
            self._mask(attention_mask, cu_seqlens, S, past, input_ids.device), embeds.dtype)
        hidden = self.language_model(embeds, position_ids, mask=mask, cache=cache, cu_seqlens=cu_seqlens,
                                     segment_prefix=segment_prefix)
        normed = self.language_model.norm(hidden)
        logits = self.lm_head(self._kept(normed, logits_to_keep, labels))
        out = MiMoVLOutput(logits=logits, hidden_states=normed, rope_deltas=rope_deltas)
        if labels is not None:
            labels = mask_segment_starts(labels, cu_seqlens)
            out.loss = causal_lm_loss(logits, labels, shift=1)
            if self.language_model.mtp_layers:
                out.mtp_loss = self._mtp_loss(hidden, input_ids, labels, position_ids, mask, cu_seqlens)
                out.loss = out.loss + mtp_loss_weight * out.mtp_loss
        return out

    @staticmethod
    def _kept(normed: torch.Tensor, logits_to_keep: int | torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The hidden states the head reads: all, the last ``logits_to_keep``, or the positions of a 1D tensor."""
        if not torch.is_tensor(logits_to_keep):
            return normed[:, -logits_to_keep:] if logits_to_keep else normed
        if labels is not None:
            raise ValueError("labels need the logits of every position; with logits_to_keep given as positions, "
                             "compute the loss from the kept logits")
        return normed[:, logits_to_keep.to(normed.device)]

    def _mask(self, attention_mask, cu_seqlens, q_len: int, past: int, device) -> torch.Tensor | None:
        if cu_seqlens is not None:
            check_cu_seqlens(cu_seqlens, q_len)
            if self.config.attn_implementation == "flash_attention_2" and device.type == "cuda" and flash_available():
                return None  # flash-attn varlen uses cu_seqlens directly
            if segments_without_mask(device):
                return None  # attention per segment: a fraction of the row's dense S^2 (attention.py)
            seg = segment_ids_from_cu_seqlens(cu_seqlens.to(device), q_len)[None]
            return build_mask(q_len, q_len, causal=True, segment_ids=seg)
        if attention_mask is None:
            return None
        if q_len == 1 and past:  # one decoding step: causality is implied, only padding matters
            return attention_mask.bool()[:, None, None, :]
        if bool(attention_mask.all()):
            return None
        return build_mask(q_len, past + q_len, causal=True, key_padding=attention_mask, q_offset=past)

    def _mtp_loss(self, hidden, input_ids, labels, position_ids, mask, cu_seqlens) -> torch.Tensor:
        """Layer k (0-based) predicts the token k+2 ahead, from the previous depth's hidden state and
        the embedding of the token k+1 ahead (MiMo-7B report, sec. 2.3)."""
        rope = self.language_model.rope(position_ids, hidden.dtype)
        losses, h = [], hidden
        for k, layer in enumerate(self.language_model.mtp_layers):
            ahead = torch.roll(input_ids, shifts=-(k + 1), dims=1)  # wrapped tail is never a label
            h = layer(h, self.language_model.embed_tokens(ahead), rope, mask, cu_seqlens)
            losses.append(causal_lm_loss(self.lm_head(h), labels, shift=k + 2))
        return torch.stack(losses).mean()


def mask_segment_starts(labels: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """In a packed row, the first token of a sample must not be predicted from the previous sample."""
    if cu_seqlens is None:
        return labels
    labels = labels.clone()
    labels[:, cu_seqlens[:-1].long().to(labels.device)] = IGNORE_INDEX
    return labels


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Mean cross-entropy (float32) of logits at t against labels at t + shift, ignoring -100."""
    pred = logits[:, :-shift].float().reshape(-1, logits.shape[-1])
    target = labels[:, shift:].reshape(-1).to(logits.device)
    return F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX)
