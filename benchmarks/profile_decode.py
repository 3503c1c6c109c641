"""Where a greedy decoding step spends its time: mimolab's ``Decoder`` part by part, one step by variant (the
model's own forward as generation ran it before issue 23, the Decoder, without prepacked weights, with the
two-matmul attention, with bf16 matmuls), and the top operators of transformers' and mimolab's ``generate``
under torch.profiler.

    OMP_NUM_THREADS=1 python benchmarks/profile_decode.py [--preset cpu --batch 8 --cache-len 180 --dtype float32]

Parts: the median wall-clock microseconds per step of each piece of ``Decoder.__call__`` (the four layers'
calls summed), timed in place over ``--steps`` steps at a fixed cache length, so that a shared machine's
preemptions fall out of the medians; "rest" is the step's median minus the parts (everything between them,
and time this process waited). Then each library's generate of ``--new-tokens`` tokens for ``--batch``
prompts of bench_model's batch, its operators by self CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import make_batch, model_pair  # noqa: E402

import mimolab.model.language as language  # noqa: E402
from mimolab.model.generation import generate  # noqa: E402
from mimolab.model.language import Decoder, KVCache  # noqa: E402


def decoder_parts(model, batch: int, cache_len: int, dtype: torch.dtype, steps: int) -> dict[str, float]:
    """Median microseconds per step of each part of one decoding step over a cache of ``cache_len`` tokens."""
    times = defaultdict(list)

    def timed(name, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            times[name].append(time.perf_counter() - start)
            return out
        return call

    with torch.inference_mode():
        cache = filled_cache(model, batch, cache_len, dtype)
        decoder = Decoder(model.language_model, model.lm_head, dtype, max_position=cache_len + 1)
        names = (None, "qkv", "o", None, "gate_up", "down")  # the norms are timed through rms_norm
        decoder.layers = [tuple(timed(n, f) if n else f for n, f in zip(names, layer)) for layer in decoder.layers]
        decoder.head = timed("head", decoder.head)
        patched = {"attention": language.attention, "apply_rotary": language.apply_rotary, "rms_norm": language.rms_norm}
        for name, fn in patched.items():
            setattr(language, name, timed(name, fn))
        update = KVCache.update
        KVCache.update = timed("cache_update", update)
        tokens, positions = torch.randint(0, 1000, (batch,)), torch.full((batch,), cache_len)
        step = []
        try:
            for _ in range(steps):
                cache.length = cache_len
                start = time.perf_counter()
                decoder(tokens, positions, cache)
                step.append(time.perf_counter() - start)
        finally:
            for name, fn in patched.items():
                setattr(language, name, fn)
            KVCache.update = update
    per_step = {name: 1e6 * statistics.median(t) * len(t) / steps for name, t in times.items()}
    per_step["step"] = 1e6 * statistics.median(step)
    per_step["rest"] = per_step["step"] - sum(v for k, v in per_step.items() if k != "step")
    return per_step


def _matmul_single_query(q, k, v, mask, n_rep):
    """The single-query attention before issue 23: two matmuls and a softmax (for the ablation)."""
    B, H, _, D = q.shape
    scores = torch.matmul(q.view(B, H // n_rep, n_rep, D), k.transpose(-1, -2)) * D ** -0.5
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v).view(B, 1, H, D)


def _unpacked_linear(modules, dtype):
    """fused_linear without oneDNN's prepacked weights (for the ablation)."""
    weight = torch.cat([m.weight for m in modules]).to(dtype)
    bias = None if modules[0].bias is None else torch.cat([m.bias for m in modules]).to(dtype)
    return lambda x: torch.nn.functional.linear(x.to(dtype), weight, bias)


def ablation(model, batch: int, cache_len: int, steps: int) -> dict[str, float]:
    """Median CPU milliseconds of one decoding step at a fixed cache length: the model's own forward for one
    token (generation's step before issue 23: mask rebuilt, rope recomputed, separate projections), the
    Decoder, the Decoder without prepacked weights, with the two-matmul attention, with bf16 matmuls (and a bf16
    cache, as generation uses)."""
    import mimolab.model.attention as attention_module

    with torch.inference_mode():
        cache = filled_cache(model, batch, cache_len, model.dtype)
        bf16_cache = filled_cache(model, batch, cache_len, torch.bfloat16)  # generation's cache for bf16 decoding
        tokens, positions = torch.randint(0, 1000, (batch,)), torch.full((batch,), cache_len)
        mask = torch.ones(batch, cache_len + 1, dtype=torch.long)
        decoder = lambda dtype=None: Decoder(model.language_model, model.lm_head, dtype)  # noqa: E731
        variants = {
            "forward": lambda: lambda: model(tokens[:, None], attention_mask=mask, cache=cache,
                                             position_ids=positions.view(1, -1, 1).expand(3, -1, 1)),
            "decoder": decoder, "decoder_bf16": lambda: decoder(torch.bfloat16),
            "decoder_unpacked": (language, "fused_linear", _unpacked_linear),
            "decoder_matmul_attention": (attention_module, "_single_query", _matmul_single_query)}
        out = {}
        for name, variant in variants.items():
            if isinstance(variant, tuple):  # the Decoder with one piece swapped for the old one
                module, attr, old = variant
                new = getattr(module, attr)
                setattr(module, attr, old)
                try:
                    step = decoder()
                    out[name] = _median_cpu_ms(lambda: step(tokens, positions, cache), cache, cache_len, steps)
                finally:
                    setattr(module, attr, new)
                continue
            step = variant()
            kv = bf16_cache if name == "decoder_bf16" else cache
            call = step if name == "forward" else (lambda step=step, kv=kv: step(tokens, positions, kv))
            out[name] = _median_cpu_ms(call, kv, cache_len, steps)
    return out


def filled_cache(model, batch: int, cache_len: int, dtype: torch.dtype) -> KVCache:
    """A cache of ``cache_len`` random tokens' keys and values, in ``dtype`` (generation keeps the cache in the
    decoding matmuls' dtype: bf16 for bf16 decoding, its keys transposed on a CPU)."""
    cache = KVCache.empty(model.config.text, batch, cache_len + 1, model.device, dtype)
    ids = torch.randint(0, 1000, (batch, cache_len), device=model.device)
    model(ids, cache=cache, position_ids=torch.arange(cache_len, device=model.device).expand(3, batch, -1))
    return cache


def _median_cpu_ms(call, cache, cache_len: int, steps: int) -> float:
    times = []
    for _ in range(steps):
        cache.length = cache_len
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def top_ops(fn, rows: int) -> str:
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                              max_name_column_width=40, max_shapes_column_width=50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cache-len", type=int, default=180)
    parser.add_argument("--dtype", default="float32", help="the decoding matmuls' dtype")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rows", type=int, default=12, help="operators listed per library")
    args = parser.parse_args()
    torch.manual_seed(0)
    hf, ours, cfg = model_pair(args.preset)
    hf.eval(), ours.eval()
    parts = decoder_parts(ours, args.batch, args.cache_len, getattr(torch, args.dtype), args.steps)
    print(f"mimolab decoding step, batch {args.batch}, cache {args.cache_len}, {args.dtype} matmuls (median us per step):")
    print("  " + "  ".join(f"{k} {v:.0f}" for k, v in parts.items()))
    steps = ablation(ours, args.batch, args.cache_len, args.steps)
    print(f"one step, median CPU ms (batch {args.batch}, cache {args.cache_len}):")
    print("  " + "  ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    ids, mask, pixels, grids, types = make_batch(cfg, args.batch, 96, [1, 8, 8], left_pad=True, seed=1)
    n = args.new_tokens

    @torch.no_grad()
    def hf_generate():
        hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grids, mm_token_type_ids=types,
                    max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=cfg.pad_token_id)

    def our_generate():
        generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=n, eos_token_ids=[-1])

    for name, fn in (("transformers", hf_generate), ("mimolab", our_generate)):
        fn()  # warm-up
        print(f"\n{name} generate, batch {args.batch} x {n} new tokens:\n{top_ops(fn, args.rows)}")


if __name__ == "__main__":
    main()
