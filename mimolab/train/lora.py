"""LoRA adapters through peft, on any part of MiMoVL, saved in peft's own format.

``add_lora`` injects peft's LoRA layers into the chosen parts (language-model attention and MLP by
default; the ViT and the projector on request) and freezes everything else. ``save_lora`` writes
``adapter_config.json`` + ``adapter_model.safetensors`` under transformers' Qwen2.5-VL module names,
so ``peft.PeftModel.from_pretrained(Qwen2_5_VLForConditionalGeneration..., path)`` loads them;
``load_lora`` reads them back onto a MiMoVL, ``merge_lora`` folds them into the base weights.

mimolab's module names differ from transformers' by a prefix only (see model/checkpoint.py), so
the target patterns are regexes that match both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from mimolab.model.checkpoint import atomic_directory, checkpoint_key_to_mimolab, mimolab_key_to_checkpoint

LORA_TARGETS = {
    "llm": r"language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)",
    "vision": r"visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)",
    "projector": r"visual\.merger\.mlp\.(0|2)",
}
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the wrapped model's own names
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"


def target_pattern(parts: tuple[str, ...] | list[str]) -> str:
    unknown = [p for p in parts if p not in LORA_TARGETS]
    if unknown or not parts:
        raise ValueError(f"unknown LoRA parts {unknown or parts}; choose from {sorted(LORA_TARGETS)}")
    # '.*' first: transformers nests the same modules one level deeper (model.language_model...)
    return r".*(" + "|".join(LORA_TARGETS[p] for p in parts) + r")"


def add_lora(model: nn.Module, parts: tuple[str, ...] | list[str] = ("llm",), r: int = 8, alpha: int = 16,
             dropout: float = 0.0) -> LoraConfig:
    """Inject LoRA into ``parts`` and freeze every non-LoRA parameter; returns the peft config."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_pattern(parts), bias="none")
    inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    model.lora_config = config
    return config


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in model.modules())


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".lora_" in n]


def save_lora(model: nn.Module, path: str | Path) -> Path:
    """peft's directory format, module names as transformers' Qwen2_5_VLForConditionalGeneration has them."""
    path = Path(path)
    state = get_peft_model_state_dict(model)  # our names, adapter name removed
    tensors = {PEFT_PREFIX + mimolab_key_to_checkpoint(k): v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_directory(path) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        config = model.lora_config.to_dict()
        config.update(base_model_name_or_path=None, task_type=None, peft_type="LORA",
                      target_modules=model.lora_config.target_modules)
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    return path


def load_lora(model: nn.Module, path: str | Path) -> LoraConfig:
    """Add the adapters of a peft directory (written by ``save_lora`` or by peft for Qwen2.5-VL)."""
    path = Path(path)
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} is not a LoRA adapter directory (needs {CONFIG} and {WEIGHTS})")
    config = LoraConfig.from_pretrained(str(path))
    if not has_lora(model):
        inject_adapter_in_model(config, model)
        model.lora_config = config
    state = {}
    for key, tensor in load_file(str(path / WEIGHTS)).items():
        name = checkpoint_key_to_mimolab(key.removeprefix(PEFT_PREFIX))
        if name is None:
            raise KeyError(f"adapter weight {key!r} names no module of MiMoVL")
        state[name] = tensor
    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise KeyError(f"adapter weights that match no LoRA layer: {result.unexpected_keys[:5]}")
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    return config


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layer back (state-dict keys as
    a model that never had LoRA)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if hasattr(model, "lora_config"):
        del model.lora_config
    for param in model.parameters():
        param.requires_grad_(True)
    return model
