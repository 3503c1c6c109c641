"""Small building blocks shared by the vision encoder and the language model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (as Qwen2 does), scaled by a learned weight."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _RMSNormFunction.apply(x, self.weight, self.eps)
        # normalise in float32 whatever the activation dtype: x * rsqrt(mean(x^2) + eps), one fused kernel
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with its backward written out: the same forward numbers as ``F.rms_norm`` (the same float32 steps),
    and a backward of a few whole-tensor ops where autograd replays every step of the forward (pow, mean, add,
    rsqrt, two products, casts): a norm's forward + backward a third faster, a cpu-preset bf16 training step 3-5%
    (ad hoc A/B alternating with the autograd version; within the noise of the ratio to transformers). y = x * r with
    r = rsqrt(mean(x^2) + eps), out = w * y, so dx = r * (dy - y * mean(dy * y)) with dy = dout * w, and dw = sum
    over rows of dout * y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.float()
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
        y = xf * rstd
        h = y.to(x.dtype)  # what the weight multiplies: the normalised x in the activation dtype
        ctx.save_for_backward(y, h, rstd, weight)
        return weight * h

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, h, rstd, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_out * h).reshape(-1, h.shape[-1]).sum(0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            dy = (grad_out * weight).to(h.dtype).float()  # through the product and the cast, as autograd would
            grad_x = torch.addcmul(dy, y, (dy * y).mean(-1, keepdim=True), value=-1).mul_(rstd).to(h.dtype)
        return grad_x, grad_weight, None


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); the ViT uses biases, the language model does not."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, out_dim or dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def compile_blocks(blocks: Sequence[nn.Module]) -> list[Callable]:
    """Each block through ``torch.compile`` with dynamic shapes (packed rows and images differ in length from step
    to step); the blocks themselves stay as they are (their parameters, state-dict keys and eager forward)."""
    return [torch.compile(block, dynamic=True) for block in blocks]


def compiled_or_eager(blocks: Sequence[nn.Module], compiled: list[Callable] | None, uncached: bool = True) -> Sequence:
    """The compiled blocks for a training forward (gradients on, no KV cache), else the blocks: evaluation and
    generation run eager, where a compile would cost more than it saves (one shape, few calls)."""
    return compiled if compiled is not None and uncached and torch.is_grad_enabled() else blocks
