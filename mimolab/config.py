"""Model configuration: dataclasses with named presets, and the mapping to/from a
Qwen2.5-VL ``config.json`` (the format MiMo-VL checkpoints are released in).

Presets (see ``PRESETS``): ``smoke`` (tests, seconds), ``cpu`` (a laptop, minutes per stage),
``gpu`` (one GPU, bf16), ``mimo-vl-7b`` (the released architecture: build it on the meta device).

The synthetic-world presets use a small tokenizer whose last ``len(SPECIAL_TOKENS)`` ids are the
Qwen2.5-VL special tokens in Qwen's own order, followed by the thinking tags; see
``special_token_ids``.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

# Qwen2.5-VL's special tokens in the order of their official ids (151643 ...), then MiMo's
# thinking tags. The synthetic tokenizer places them, in this order, at the end of its vocabulary.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
THINK_TOKENS = ["<think>", "</think>"]
SPECIAL_TOKENS = QWEN_SPECIAL_TOKENS + THINK_TOKENS
QWEN_SPECIAL_BASE = 151643  # id of <|endoftext|> in the real Qwen2/2.5 vocabulary
SYNTHETIC_VOCAB_SIZE = 2048  # the synthetic world's tokenizer (byte-level BPE + SPECIAL_TOKENS)


def special_token_ids(vocab_size: int = SYNTHETIC_VOCAB_SIZE) -> dict[str, int]:
    """Ids of SPECIAL_TOKENS in a synthetic tokenizer of ``vocab_size`` (they fill its tail)."""
    base = vocab_size - len(SPECIAL_TOKENS)
    return {tok: base + i for i, tok in enumerate(SPECIAL_TOKENS)}


@dataclass(frozen=True)
class VisionConfig:
    """Qwen2.5-ViT. Field names follow transformers' ``Qwen2_5_VLVisionConfig``."""

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3456
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112  # pixels; a window is window_size // patch_size patches wide
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    out_hidden_size: int = 4096  # = the language model's hidden size
    tokens_per_second: int = 2  # temporal rotary positions per second of video
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class TextConfig:
    """MiMo-7B-style decoder. Field names follow transformers' ``Qwen2_5_VLTextConfig``."""

    vocab_size: int = 151680
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    rms_norm_eps: float = 1e-5
    rope_theta: float = 640000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)  # temporal/height/width; sums to head_dim/2
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    num_mtp_layers: int = 0  # MiMo-7B multi-token-prediction heads; MiMo-VL ships none

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


SPECIAL_ID_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                     "bos_token_id", "eos_token_id", "pad_token_id")
OPTIONAL_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")  # transformers allows null for these
# transformers' defaults for an id config.json does not give (Qwen2_5_VLConfig / Qwen2_5_VLTextConfig)
HF_DEFAULT_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                  "vision_end_token_id": 151653, "bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": None}


@dataclass(frozen=True)
class MiMoVLConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projector_type: str = "patch_merger"  # "patch_merger" (checkpoint layout) or "swiglu"
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    # None: the checkpoint names no such token (transformers' default for pad); written back as null
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151645  # <|im_end|>
    pad_token_id: int | None = 151643
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2"
    name: str = "custom"

    def __post_init__(self) -> None:
        v, t = self.vision, self.text
        if v.out_hidden_size != t.hidden_size:
            raise ValueError(f"vision.out_hidden_size ({v.out_hidden_size}) must equal text.hidden_size ({t.hidden_size})")
        if 2 * sum(t.mrope_section) != t.head_dim:
            raise ValueError(f"mrope_section {t.mrope_section} must sum to head_dim/2 = {t.head_dim // 2}")
        if t.num_attention_heads % t.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if v.hidden_size % v.num_heads or t.hidden_size % t.num_attention_heads:
            raise ValueError("hidden sizes must be divisible by the head counts")
        if self.projector_type not in ("patch_merger", "swiglu"):
            raise ValueError(f"unknown projector_type {self.projector_type!r}")
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(f"unknown attn_implementation {self.attn_implementation!r}")
        self._check_special_ids()

    def _check_special_ids(self) -> None:
        """Every special id names a row of the embedding: transformers refuses a pad id outside it
        (``Padding_idx must be within num_embeddings``) and no model can embed such a token."""
        vocab = self.text.vocab_size
        for name in SPECIAL_ID_FIELDS:
            value = getattr(self, name)
            if value is None and name in OPTIONAL_ID_FIELDS:
                continue
            if not isinstance(value, int) or not 0 <= value < vocab:
                raise ValueError(f"{name} = {value!r} is outside the vocabulary (0..{vocab - 1}); "
                                 f"choose an id below text.vocab_size"
                                 + (" or None" if name in OPTIONAL_ID_FIELDS else ""))

    @property
    def padding_id(self) -> int:
        """The id that fills padded positions: pad_token_id, else eos, else bos, else 0. Padded
        positions are masked out, so any token will do when a checkpoint names no pad token."""
        for value in (self.pad_token_id, self.eos_token_id, self.bos_token_id):
            if value is not None:
                return value
        return 0

    def replace(self, **changes: Any) -> "MiMoVLConfig":
        """A copy with top-level fields changed; ``vision``/``text`` accept dicts of field changes."""
        for key in ("vision", "text"):
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_name(cls, name: str, **changes: Any) -> "MiMoVLConfig":
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**changes) if changes else PRESETS[name]

    # ---- config.json (transformers' Qwen2_5_VLConfig) ----
    def to_hf_dict(self) -> dict[str, Any]:
        v, t = self.vision, self.text
        text_config = {
            "model_type": "qwen2_5_vl_text", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads, "num_key_value_heads": t.num_key_value_heads,
            "hidden_act": "silu", "rms_norm_eps": t.rms_norm_eps, "max_position_embeddings": t.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta, "mrope_section": list(t.mrope_section)},
            "tie_word_embeddings": t.tie_word_embeddings, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id, "attention_dropout": 0.0,
            "use_sliding_window": False,
        }
        vision_config = {
            "model_type": "qwen2_5_vl_vision", "depth": v.depth, "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size, "num_heads": v.num_heads, "in_channels": v.in_channels,
            "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size, "window_size": v.window_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes), "out_hidden_size": v.out_hidden_size,
            "tokens_per_second": v.tokens_per_second, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
        }
        out = {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "text_config": text_config, "vision_config": vision_config,
            "image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id, "vision_end_token_id": self.vision_end_token_id,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": t.tie_word_embeddings,
        }
        if self.projector_type != "patch_merger" or t.num_mtp_layers:
            # mimolab-only variants: transformers cannot load these weights, say so in the file
            out["mimolab"] = {"projector_type": self.projector_type, "num_mtp_layers": t.num_mtp_layers}
        return out

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], **changes: Any) -> "MiMoVLConfig":
        """Read a Qwen2.5-VL config.json: transformers-5 style (``text_config``) or the older flat
        style of the released checkpoints (text fields at top level, ``rope_scaling``)."""
        d = copy.deepcopy(d)
        if d.get("model_type") not in (None, "qwen2_5_vl"):
            raise ValueError(f"config.json has model_type {d.get('model_type')!r}, expected 'qwen2_5_vl'")
        text = {**{k: v for k, v in d.items() if k not in ("text_config", "vision_config")}, **d.get("text_config", {})}
        vis = d.get("vision_config")
        if vis is None:
            raise ValueError("config.json has no vision_config: not a Qwen2.5-VL / MiMo-VL checkpoint")
        rope = text.get("rope_parameters") or {}
        scaling = text.get("rope_scaling") or {}
        mrope = rope.get("mrope_section") or scaling.get("mrope_section") or [16, 24, 24]
        theta = rope.get("rope_theta", text.get("rope_theta", 1000000.0))
        extra = d.get("mimolab", {})
        text_cfg = TextConfig(
            vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
            intermediate_size=text["intermediate_size"], num_hidden_layers=text["num_hidden_layers"],
            num_attention_heads=text["num_attention_heads"],
            num_key_value_heads=text.get("num_key_value_heads", text["num_attention_heads"]),
            rms_norm_eps=text.get("rms_norm_eps", 1e-6), rope_theta=float(theta), mrope_section=tuple(mrope),
            max_position_embeddings=text.get("max_position_embeddings", 32768),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            num_mtp_layers=extra.get("num_mtp_layers", 0),
        )
        vrope = vis.get("rope_parameters") or {}
        vision_cfg = VisionConfig(
            depth=vis["depth"], hidden_size=vis["hidden_size"], intermediate_size=vis["intermediate_size"],
            num_heads=vis["num_heads"], in_channels=vis.get("in_channels", vis.get("in_chans", 3)),
            patch_size=vis.get("patch_size", 14), temporal_patch_size=vis.get("temporal_patch_size", 2),
            spatial_merge_size=vis.get("spatial_merge_size", 2), window_size=vis.get("window_size", 112),
            fullatt_block_indexes=tuple(vis.get("fullatt_block_indexes", (7, 15, 23, 31))),
            out_hidden_size=vis.get("out_hidden_size", text["hidden_size"]),
            tokens_per_second=vis.get("tokens_per_second", 2), rope_theta=float(vrope.get("rope_theta", 10000.0)),
        )
        cfg = cls(
            vision=vision_cfg, text=text_cfg, projector_type=extra.get("projector_type", "patch_merger"),
            name="checkpoint", **_read_special_ids(d, text, text_cfg.vocab_size),
        )
        return cfg.replace(**changes) if changes else cfg


def _read_special_ids(d: dict[str, Any], text: dict[str, Any], vocab_size: int) -> dict[str, int | None]:
    """The special ids as config.json gives them (null stays None). bos/eos/pad come from the text
    config (what transformers' language model reads), else the top level; an eos list keeps its first id.

    transformers writes its defaults (bos 151643, eos 151645) for a model with a small vocabulary;
    such an id names no token, so it is read as None, with a warning, and saved back as null."""
    ids = {}
    for name in SPECIAL_ID_FIELDS:
        value = (text if name in OPTIONAL_ID_FIELDS else d).get(name, HF_DEFAULT_IDS[name])
        value = value[0] if isinstance(value, list) else value
        if name in OPTIONAL_ID_FIELDS and value is not None and not 0 <= value < vocab_size:
            warnings.warn(f"config.json: {name} {value} is outside the vocabulary (0..{vocab_size - 1}): read as "
                          "None (no such token)", stacklevel=3)
            value = None
        ids[name] = value
    return ids


def _synthetic(name: str, vision: VisionConfig, text: TextConfig) -> MiMoVLConfig:
    ids = special_token_ids(text.vocab_size)
    return MiMoVLConfig(
        vision=vision, text=text, name=name,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )


PRESETS: dict[str, MiMoVLConfig] = {
    # a few hundred K parameters: every notebook and command runs in seconds
    "smoke": _synthetic(
        "smoke",
        VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, window_size=56,
                     fullatt_block_indexes=(1,), out_hidden_size=64),
        TextConfig(vocab_size=SYNTHETIC_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, mrope_section=(2, 3, 3),
                   max_position_embeddings=4096, tie_word_embeddings=True),
    ),
    # ~5M parameters: learns the synthetic world on 2 CPU cores in minutes per stage
    "cpu": _synthetic(
        "cpu",
        VisionConfig(depth=4, hidden_size=128, intermediate_size=256, num_heads=4, window_size=112,
                     fullatt_block_indexes=(1, 3), out_hidden_size=256),
        TextConfig(vocab_size=SYNTHETIC_VOCAB_SIZE, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, mrope_section=(8, 12, 12),
                   max_position_embeddings=8192, tie_word_embeddings=True),
    ),
    # ~150M parameters: one GPU, bf16, flash-attn
    "gpu": _synthetic(
        "gpu",
        VisionConfig(depth=12, hidden_size=512, intermediate_size=1376, num_heads=8, window_size=112,
                     fullatt_block_indexes=(3, 7, 11), out_hidden_size=768),
        TextConfig(vocab_size=SYNTHETIC_VOCAB_SIZE, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                   num_attention_heads=12, num_key_value_heads=4, mrope_section=(8, 12, 12),
                   max_position_embeddings=32768, tie_word_embeddings=False),
    ),
    # the released MiMo-VL-7B architecture (ViT from Qwen2.5-VL-72B, MiMo-7B language model)
    "mimo-vl-7b": MiMoVLConfig(name="mimo-vl-7b"),
}
