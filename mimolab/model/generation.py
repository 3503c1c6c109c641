"""KV-cache generation for batched multimodal prompts, built for RL rollouts.

One prefill over the (left- or right-padded) prompts, then one token per step for every row still
running; rows that finish leave the batch (their cache rows are dropped), so a long straggler
does not make the whole batch pay for it. Returns the new token ids, the log-probability of each
under the sampling distribution (``log_softmax(logits / temperature)``, before top-k/top-p
truncation: the quantity an on-policy trainer recomputes), and why each row stopped.

``num_return_sequences=n`` samples n completions of each prompt (GRPO's group) from one prefill: the
vision encoder and the prompt's forward run once per prompt, then its KV cache, attention mask,
next position and last logits are copied into n consecutive rows that sample independently. The
random draws are those of the same prompts repeated n times beforehand: every sampling step draws
for the full (B * n)-row batch, in the same row order.

Positions: the prompt's 3D positions come from ``get_rope_index``; each generated token is text,
so its three position ids are all ``max(prompt positions) + 1 + step`` (transformers' rope_deltas).

The prefill is the model's forward; each step after it runs ``language.Decoder`` (the same modules,
with q/k/v and gate/up stacked into one matmul each, weights prepacked once per call, the padding as
an additive mask over the static cache). ``prefill_dtype`` / ``decode_dtype`` = "bfloat16" lower the
matmuls of either phase (on a CPU with bf16 units: bf16 wins at prefill shapes and, on an AMD EPYC
with avx512_bf16, at decoding shapes too; benchmarks/README.md): log-probs are then within bf16
rounding of the float32 forward, not equal to it. The KV cache is kept in ``decode_dtype``: a decoding step
reads all of it, and in bf16 reads half the bytes. The default keeps the model's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mimolab.model.language import Decoder, KVCache


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    eos_token_ids: Sequence[int] = ()  # empty: the model's eos_token_id
    stop_strings: Sequence[str] = ()  # need a tokenizer to decode
    seed: int | None = None
    suppress_token_ids: Sequence[int] = ()  # never sampled (RL rollouts: media placeholders); excluded from logprobs
    num_return_sequences: int = 1  # rows per prompt, prompt i's at i*n .. i*n+n-1; the prompt is prefilled once
    # matmul precision per phase (None: the model's dtype, log-probs equal to its forward): "bfloat16" runs the
    # prefill under autocast / the decoding steps' matmuls in bfloat16 (faster where the CPU has bf16 units)
    prefill_dtype: torch.dtype | str | None = None
    decode_dtype: torch.dtype | str | None = None

    def __post_init__(self) -> None:
        if self.num_return_sequences < 1:
            raise ValueError(f"num_return_sequences must be at least 1, got {self.num_return_sequences}")
        self.prefill_dtype = as_dtype(self.prefill_dtype, "prefill_dtype")
        self.decode_dtype = as_dtype(self.decode_dtype, "decode_dtype")


MATMUL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def as_dtype(value: torch.dtype | str | None, name: str) -> torch.dtype | None:
    """A dtype given as a torch.dtype or its name (YAML configs); None stays None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in MATMUL_DTYPES:
        raise ValueError(f"{name} {value!r}: choose one of {sorted(MATMUL_DTYPES)} (or None for the model's dtype)")
    return MATMUL_DTYPES[value]


@dataclass
class GenerationOutput:
    sequences: list[list[int]]  # new tokens per prompt (stop token included)
    logprobs: list[list[float]]
    finish_reasons: list[str]  # "eos", "stop_string" or "length"
    texts: list[str] = field(default_factory=list)  # filled when a tokenizer was given


def _pop_config(kwargs: dict) -> GenerationConfig:
    """The GenerationConfig fields among ``kwargs`` (removed from it; the rest are model inputs)."""
    return GenerationConfig(**{k: kwargs.pop(k) for k in list(kwargs) if k in GenerationConfig.__dataclass_fields__})


def model_eos(model) -> list[int]:
    """The model's own stop token, if its config names one (a checkpoint may leave eos null)."""
    eos = model.config.eos_token_id
    return [] if eos is None else [eos]


def _next_token(logits: torch.Tensor, cfg: GenerationConfig, rng: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, V) -> token (B,), its log-probability under softmax(logits / T) (B,)."""
    logits = logits.float()
    if cfg.suppress_token_ids:
        logits = logits.index_fill(-1, torch.tensor(list(cfg.suppress_token_ids), device=logits.device), float("-inf"))
    if not cfg.do_sample:
        token = logits.argmax(-1)
        return token, torch.log_softmax(logits, -1).gather(-1, token[:, None])[:, 0]
    scaled = logits / max(cfg.temperature, 1e-6)
    logprobs = torch.log_softmax(scaled, -1)
    filtered = scaled
    if cfg.top_k and cfg.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, cfg.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(scaled < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop_sorted = cum - torch.softmax(sorted_logits, -1) >= cfg.top_p  # keep the smallest set reaching p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    token = torch.multinomial(torch.softmax(filtered, -1), 1, generator=rng)[:, 0]
    return token, logprobs.gather(-1, token[:, None])[:, 0]


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's padding to the left, so every prompt ends at the last column and the new
    tokens follow it directly in the cache (right-padded prompts are accepted this way)."""
    if bool(attention_mask[:, -1].all()):
        return input_ids, attention_mask
    order = torch.argsort(attention_mask, dim=1, stable=True)  # pads (0) first, real tokens keep their order
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def _prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, cfg: GenerationConfig,
             vision_inputs: dict) -> tuple[KVCache, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward over the B prompts, then each row copied ``num_return_sequences`` times.
    Returns the cache, the last logits (B * n, V), each row's next position (B * n,) and the
    left-aligned attention mask (B * n, S)."""
    B, S = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids, attention_mask = left_align(input_ids, attention_mask)
    vision_keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
    position_ids, deltas = model.rope_index(input_ids, attention_mask=attention_mask,
                                            **{k: vision_inputs.get(k) for k in vision_keys})
    next_pos = deltas[:, 0] + attention_mask.sum(-1)  # = largest prompt position + 1, per row
    # the cache in the decoding matmuls' dtype: a decoding step reads all of it, so bf16 halves what it reads
    cache = KVCache.empty(model.config.text, B, S + cfg.max_new_tokens, input_ids.device,
                          cfg.decode_dtype or model.dtype)
    lower = cfg.prefill_dtype not in (None, model.dtype)
    with torch.autocast(input_ids.device.type, dtype=cfg.prefill_dtype or torch.bfloat16, enabled=lower):
        logits = model(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                       logits_to_keep=1, **vision_inputs).logits[:, -1].float()
    n = cfg.num_return_sequences
    if n > 1:  # (B, ...) -> (B * n, ...): row i*n + j is sample j of prompt i, as if the prompts were repeated
        cache.repeat_rows(n)
        logits, next_pos, attention_mask = (t.repeat_interleave(n, dim=0) for t in (logits, next_pos, attention_mask))
    return cache, logits, next_pos, attention_mask


def decode_steps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 cfg: GenerationConfig | None = None, **vision_inputs) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Yield, per step, (original row indices still running, their new tokens, their log-probs).

    A row stops after emitting an eos token or after ``max_new_tokens``; the caller may also
    ``send`` a list of row indices to stop (stop strings). Rows are numbered after the
    ``num_return_sequences`` expansion (B * n of them)."""
    cfg = cfg or GenerationConfig()
    device = input_ids.device
    eos = torch.tensor(list(cfg.eos_token_ids) or model_eos(model), dtype=torch.long, device=device)
    rng = None
    if cfg.seed is not None:
        rng = torch.Generator(device=device).manual_seed(cfg.seed)  # used by the sampling steps only
    cache, logits, next_pos, attention_mask = _prefill(model, input_ids, attention_mask, cfg, vision_inputs)
    decoder = Decoder(model.language_model, model.lm_head, cfg.decode_dtype,
                      max_position=int(next_pos.max()) + cfg.max_new_tokens)
    mask = _decode_mask(attention_mask, cache.max_len, model.dtype)
    rows = torch.arange(logits.shape[0], device=device)
    for step in range(cfg.max_new_tokens):
        token, logprob = _next_token(logits, cfg, rng)
        stop_rows = yield rows.tolist(), token, logprob
        done = torch.isin(token, eos)
        if stop_rows:
            done |= torch.isin(rows, torch.tensor(stop_rows, device=device))
        if step == cfg.max_new_tokens - 1:
            return
        if bool(done.any()):  # finished rows leave the batch
            if bool(done.all()):
                return
            keep = ~done
            rows, token, next_pos = rows[keep], token[keep], next_pos[keep]
            mask = mask[keep] if mask is not None else None
            cache.select(keep)
        logits = decoder(token, next_pos + step, cache, mask)


def _decode_mask(attention_mask: torch.Tensor, max_len: int, dtype: torch.dtype) -> torch.Tensor | None:
    """The prompts' padding as an additive mask over the whole cache (R, 1, 1, max_len): -inf on
    padding, 0 on prompt tokens and on every generated position; None when no prompt is padded."""
    if bool(attention_mask.all()):
        return None
    mask = torch.zeros(attention_mask.shape[0], 1, 1, max_len, dtype=dtype, device=attention_mask.device)
    mask[:, 0, 0, :attention_mask.shape[1]].masked_fill_(attention_mask == 0, float("-inf"))
    return mask


@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             tokenizer=None, **kwargs) -> GenerationOutput:
    """Batched generation. kwargs: the vision inputs (``pixel_values``, ``image_grid_thw``,
    ``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``) and GenerationConfig fields.
    The output has ``num_return_sequences`` rows per prompt, prompt i's at i*n .. i*n+n-1."""
    cfg = _pop_config(kwargs)
    if cfg.stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode the generated text")
    B = input_ids.shape[0] * cfg.num_return_sequences
    seqs, lps, reasons = [[] for _ in range(B)], [[] for _ in range(B)], ["length"] * B
    eos = set(cfg.eos_token_ids) or set(model_eos(model))
    steps = decode_steps(model, input_ids, attention_mask, cfg, **kwargs)
    stop_rows: list[int] = []
    try:
        rows, tokens, logprobs = next(steps)
        while True:
            stop_rows = []
            for r, t, lp in zip(rows, tokens.tolist(), logprobs.tolist()):
                seqs[r].append(t)
                lps[r].append(lp)
                if t in eos:
                    reasons[r] = "eos"
                elif cfg.stop_strings and _hits_stop_string(tokenizer, seqs[r], cfg.stop_strings):
                    reasons[r] = "stop_string"
                    stop_rows.append(r)
            rows, tokens, logprobs = steps.send(stop_rows)
    except StopIteration:
        pass
    texts = [tokenizer.decode(s, skip_special_tokens=False) for s in seqs] if tokenizer is not None else []
    return GenerationOutput(seqs, lps, reasons, texts)


def _hits_stop_string(tokenizer, tokens: list[int], stop_strings: Sequence[str]) -> bool:
    tail = tokenizer.decode(tokens[-16:], skip_special_tokens=False)  # stop strings are short
    return any(s in tail for s in stop_strings)


@torch.inference_mode()
def stream(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, tokenizer,
           **kwargs) -> Iterator[str]:
    """Yield the text of one prompt (batch of 1) piece by piece as it is generated (for the demo)."""
    cfg = _pop_config(kwargs)
    if input_ids.shape[0] != 1 or cfg.num_return_sequences != 1:
        raise ValueError("stream() takes a single prompt and returns a single sequence")
    tokens, shown = [], ""
    for _, token, _ in decode_steps(model, input_ids, attention_mask, cfg, **kwargs):
        tokens.append(int(token[0]))
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for a complete UTF-8 character
            yield text[len(shown):]
            shown = text
