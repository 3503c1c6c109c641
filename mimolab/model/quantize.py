"""Quantized inference: the language model's linear layers stored in 8 or 4 bits, everything else as loaded.

Modes (``MiMoVL.from_pretrained(path, quantize=...)``):

- ``"int8"``: torchao's int8 weight-only (``Int8WeightOnlyConfig``): one int8 per weight, a float32 scale and
  an int8 zero point per output row; products run in the activations' dtype. CPU or GPU. Extra ``quantize``.
- ``"int4"`` / ``"nf4"``: bitsandbytes' 4-bit ``Linear4bit`` (QLoRA): blocks of 64 weights, each with an
  absmax itself quantized to 8 bits (double quantisation); ``int4`` is bitsandbytes' default 4-bit type
  (fp4, what transformers' ``load_in_4bit`` gives), ``nf4`` the normal-float type. CUDA only, extra ``gpu``.

What is quantized: every ``nn.Linear`` inside ``language_model`` (attention, MLP and MTP projections). The ViT and
projector, the token embedding and ``lm_head`` keep their dtype: the ViT runs once per image, and the head and the
embedding set every logit (``benchmarks/bench_quantize.py`` measures the drift of what is quantized; the head and
embedding were not tried quantized). A quantized model is for inference: it cannot be saved (``check_saveable``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

MODES = ("int8", "int4", "nf4")
FOUR_BIT = {"int4": "fp4", "nf4": "nf4"}  # mimolab mode -> bitsandbytes quant_type
BNB_BLOCK, BNB_NESTED_BLOCK = 64, 256  # bitsandbytes' 4-bit block and its double-quantisation block


def check_quantize(mode: str, device: str | torch.device) -> None:
    """A clear error for a mode that does not exist, a device it does not run on, or a missing library."""
    if mode not in MODES:
        raise ValueError(f"quantize must be one of {MODES} (or None), not {mode!r}")
    device = torch.device(device)
    if mode in FOUR_BIT:
        if device.type != "cuda":
            raise ValueError(f"quantize={mode!r} runs on a CUDA GPU (bitsandbytes' 4-bit kernels), not on "
                             f"device {str(device)!r}: install the extra with pip install -e \".[gpu]\" and load "
                             f"with device='cuda', or use quantize='int8' on the CPU")
        _require("bitsandbytes", "gpu", mode)
    else:
        _require("torchao", "quantize", mode)


def _require(module: str, extra: str, mode: str) -> None:
    try:
        _import_quiet(module)
    except ImportError as err:
        raise ImportError(f"quantize={mode!r} needs {module}: pip install -e \".[{extra}]\" ({err})") from None


def _import_quiet(module: str):
    """Import ``module``; torchao logs a warning per CUDA-only extension it cannot load on a CPU machine."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return __import__(module)
    finally:
        logger.setLevel(level)


def quantizable(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear layers a mode quantizes: every ``nn.Linear`` of the language model (not ViT, embedding, head)."""
    return [(f"language_model.{name}", m) for name, m in model.language_model.named_modules()
            if isinstance(m, nn.Linear)]


def quantize_model(model: nn.Module, mode: str) -> nn.Module:
    """Quantize ``model``'s language-model linear layers in place (see the module docstring); returns it."""
    check_quantize(mode, model.language_model.embed_tokens.weight.device)
    model.eval().requires_grad_(False)
    if mode == "int8":
        _import_quiet("torchao")
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model.language_model, Int8WeightOnlyConfig())  # its default filter: every nn.Linear
    else:
        for name, linear in quantizable(model):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _to_4bit(linear, FOUR_BIT[mode]))
    return model


def _to_4bit(linear: nn.Linear, quant_type: str) -> nn.Module:
    """bitsandbytes' Linear4bit holding ``linear``'s weights (quantized as they move to the GPU, its API)."""
    import bitsandbytes as bnb

    device = linear.weight.device
    new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                            compute_dtype=linear.weight.dtype, quant_type=quant_type, device="meta")
    new.weight = bnb.nn.Params4bit(linear.weight.data.cpu(), requires_grad=False, quant_type=quant_type,
                                   blocksize=BNB_BLOCK, compress_statistics=True, module=new)
    if linear.bias is not None:
        new.bias = nn.Parameter(linear.bias.data.cpu(), requires_grad=False)
    return new.to(device)


def quantization_of(model: nn.Module) -> str | None:
    """'int8' / '4bit' when some weight of ``model`` is quantized, else None."""
    for module in model.modules():
        if type(module).__name__ == "Linear4bit":
            return "4bit"
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and type(weight.data) is not torch.Tensor:
            return "int8"  # a torchao tensor subclass
    return None


def check_saveable(model: nn.Module) -> None:
    """Saving a quantized model is refused: the checkpoint format holds float weights, and a quantized copy
    could not be loaded by transformers or trained from. Save the float model, quantize on load."""
    kind = quantization_of(model)
    if kind:
        raise ValueError(f"this model is quantized ({kind}) for inference and cannot be saved as a checkpoint: "
                         "save the unquantized model and pass quantize=... to MiMoVL.from_pretrained when loading")


# ------------------------------------------------------------------------------------ weight memory
def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: a quantized tensor subclass counts its inner tensors (data, scales, zero points)."""
    if hasattr(t, "quant_state") and t.quant_state is not None:  # bitsandbytes' Params4bit
        qs = t.quant_state
        inner = [qs.absmax, qs.code] + ([qs.state2.absmax, qs.state2.code, qs.offset] if qs.nested else [])
        return t.data.nbytes + sum(x.nbytes for x in inner if isinstance(x, torch.Tensor))
    if type(t.data) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model`` (a tied weight once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def planned_weight_bytes(model: nn.Module, mode: str) -> int:
    """Bytes ``model``'s weights would take in ``mode`` ('fp32', 'bf16', or a quantize mode with everything not
    quantized in bf16), from shapes alone: works on the meta device (the 7B preset without allocating it).
    int8 counts torchao's layout (int8 data, float32 scale and int8 zero point per row; tested against
    ``weight_bytes``); int4/nf4 bitsandbytes' (4 bits a weight, an 8-bit absmax per 64 weights, a float32
    absmax per 256 blocks)."""
    if mode not in ("fp32", "bf16", *MODES):
        raise ValueError(f"mode must be 'fp32', 'bf16' or one of {MODES}, not {mode!r}")
    float_bytes = 4 if mode == "fp32" else 2
    quantized = {id(m.weight): m.weight for _, m in quantizable(model)} if mode in MODES else {}
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        if id(t) not in quantized:
            total += t.numel() * (float_bytes if t.is_floating_point() else t.element_size())
        elif mode == "int8":
            total += t.numel() + t.shape[0] * (4 + 1)
        else:
            blocks = math.ceil(t.numel() / BNB_BLOCK)
            total += math.ceil(t.numel() / 2) + blocks + 4 * math.ceil(blocks / BNB_NESTED_BLOCK)
    return total


__all__ = ["MODES", "check_quantize", "check_saveable", "planned_weight_bytes", "quantizable", "quantization_of",
           "quantize_model", "tensor_bytes", "weight_bytes"]
