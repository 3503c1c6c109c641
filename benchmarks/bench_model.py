"""mimolab vs transformers on the same weights and inputs: training and decoding throughput.

    python benchmarks/bench_model.py --preset cpu [--device cuda --dtype bfloat16]

Forward+backward tokens/s on a batch of image+text rows; for greedy generation over a batch of
prompts of different lengths (KV cache, no early stop), at each ``--shapes`` BATCHxNEW_TOKENS: the prefill
time, the steady-state decode tokens/s (new tokens after the first, over the time after prefill) and
end-to-end tokens/s. Timings are best-of-N, the libraries alternating, in wall-clock and CPU seconds.
Both models get the same weights (transformers writes a checkpoint, mimolab loads it). Ratios > 1 mean
mimolab is faster. Decoding is timed for mimolab in the model's dtype (``mimolab``: greedy tokens equal
to transformers') and with bfloat16 matmuls where given (``mimolab_fast``: ``--fast-prefill-dtype``,
``--fast-decode-dtype``; how many rows keep transformers' greedy tokens is reported).
Targets: training >= 1.0x (issue 2); greedy decode >= 2x at 8x128 and 32x256 on the cpu preset (issue 23).

    OMP_NUM_THREADS=1 python benchmarks/bench_model.py --preset cpu --no-train --shapes 8x128 32x256
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time

import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.model.generation import generate


def make_batch(cfg: MiMoVLConfig, batch: int, text_len: int, grid: list[int], left_pad: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_img = grid[0] * grid[1] * grid[2] // cfg.vision.spatial_merge_size**2
    rows = []
    for i in range(batch):
        n_text = text_len - (i * text_len) // (2 * batch)  # lengths spread over [text_len/2, text_len]
        rows.append([*torch.randint(0, 1000, (3,), generator=g).tolist(), cfg.vision_start_token_id,
                     *[cfg.image_token_id] * n_img, cfg.vision_end_token_id,
                     *torch.randint(0, 1000, (n_text,), generator=g).tolist()])
    width = max(map(len, rows))
    ids = torch.full((batch, width), cfg.pad_token_id)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left_pad else slice(0, len(r))
        ids[i, cols], mask[i, cols] = torch.tensor(r), 1
    grids = torch.tensor([grid] * batch)
    patch_dim = 3 * cfg.vision.temporal_patch_size * cfg.vision.patch_size**2
    pixels = torch.randn(int(grids.prod(-1).sum()), patch_dim, generator=g)
    types = (ids == cfg.image_token_id).long()
    return ids, mask, pixels, grids, types


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_pair(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of two functions, run alternately (a, b, a, b, ...) so that a
    slow phase of a shared machine hits both alike. One warm-up call each."""
    fn_a(), fn_b()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((fn_a, fn_b)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def model_pair(preset: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """transformers' Qwen2_5_VLForConditionalGeneration and mimolab's MiMoVL with the same weights (transformers
    initialises and writes a checkpoint, mimolab loads it), and the preset's config."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = MiMoVLConfig.from_name(preset)
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict())))
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = MiMoVL.from_pretrained(d)
    return hf.to(device, dtype), ours.to(device, dtype), cfg


def timed_all(fns: dict, repeats: int, warm_up: bool = True) -> dict[str, dict[str, float]]:
    """Best-of-``repeats`` wall-clock and CPU seconds of each function, all run in turn (a, b, c, a, b, c,
    ...) after one warm-up call each, so that a slow phase of a shared machine hits all alike."""
    for fn in fns.values() if warm_up else ():
        fn()
    best = {name: {"wall": float("inf"), "cpu": float("inf")} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            best[name]["wall"] = min(best[name]["wall"], time.perf_counter() - wall)
            best[name]["cpu"] = min(best[name]["cpu"], time.process_time() - cpu)
    return best


def machine() -> dict:
    """What the timings ran on: CPU model, cores, threads, load, versions."""
    import transformers

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": list(os.getloadavg()), "torch": torch.__version__,
            "transformers": transformers.__version__}


def decode_bench(hf, ours, cfg, batch: int, n: int, args, dtype) -> dict:
    """Greedy generation of ``n`` tokens for ``batch`` left-padded prompts: transformers, mimolab in the
    model's dtype, mimolab with the fast dtypes; prefill (1 token) and full runs, alternating."""
    ids, mask, pixels, grids, types = (t.to(args.device) for t in make_batch(cfg, batch, args.text_len // 2, [1, 8, 8], left_pad=True, seed=1))
    pixels = pixels.to(dtype)
    hf.eval(), ours.eval()
    fast = {k: v for k, v in (("prefill_dtype", args.fast_prefill_dtype), ("decode_dtype", args.fast_decode_dtype)) if v}

    @torch.no_grad()
    def hf_generate(k: int) -> list[list[int]]:
        out = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grids, mm_token_type_ids=types,
                          max_new_tokens=k, min_new_tokens=k, do_sample=False, eos_token_id=None, pad_token_id=cfg.pad_token_id)
        return out[:, ids.shape[1]:].tolist()

    def our_generate(k: int, **dtypes) -> list[list[int]]:
        return generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=k, eos_token_ids=[-1],
                        **dtypes).sequences

    runs = {"transformers": hf_generate, "mimolab": our_generate}
    if fast:
        runs["mimolab_fast"] = lambda k: our_generate(k, **fast)
    reference = hf_generate(n)
    result = {"batch": batch, "new_tokens": n, "prompt_tokens": int(mask.sum()), "fast_dtypes": fast,
              "rows_equal_to_transformers": {name: sum(a == b for a, b in zip(fn(n), reference))
                                             for name, fn in runs.items() if name != "transformers"}}
    prefill = timed_all({name: (lambda fn=fn: fn(1)) for name, fn in runs.items()}, args.repeats)
    full = timed_all({name: (lambda fn=fn: fn(n)) for name, fn in runs.items()}, args.repeats)
    for clock in ("wall", "cpu"):
        # steady-state decoding excludes the prompt's prefill (the first token), as serving engines report it
        res = {"prefill_ms": {k: 1e3 * prefill[k][clock] for k in runs},
               "decode_tokens_per_s": {k: batch * (n - 1) / (full[k][clock] - prefill[k][clock]) for k in runs},
               "generate_tokens_per_s": {k: batch * n / full[k][clock] for k in runs}}
        for k in runs:
            if k != "transformers":
                res[f"decode_ratio_{k}"] = res["decode_tokens_per_s"][k] / res["decode_tokens_per_s"]["transformers"]
                res[f"generate_ratio_{k}"] = full["transformers"][clock] / full[k][clock]
        result[clock] = res
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text-len", type=int, default=192)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", help="decoding shapes BATCHxNEW_TOKENS (default: --batch x --new-tokens)")
    parser.add_argument("--fast-prefill-dtype", default="bfloat16", help="mimolab_fast's prefill autocast dtype ('' = none)")
    parser.add_argument("--fast-decode-dtype", default="bfloat16", help="mimolab_fast's decoding matmul dtype ('' = none)")
    parser.add_argument("--no-train", action="store_true", help="time decoding only")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    shapes = [tuple(int(x) for x in shape.split("x")) for shape in (args.shapes or [f"{args.batch}x{args.new_tokens}"])]
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    hf, ours, cfg = model_pair(args.preset, args.device, dtype)
    ids, mask, pixels, grids, types = (t.to(args.device) for t in make_batch(cfg, args.batch, args.text_len, [1, 8, 8], left_pad=False))
    pixels = pixels.to(dtype)
    n_train_tokens = int(mask.sum())
    labels = ids.masked_fill(mask == 0, -100)

    def train_step(model, **extra):
        model.train()
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grids, labels=labels, **extra)
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    results = {"preset": args.preset, "device": args.device, "dtype": args.dtype,
               "params": sum(p.numel() for p in ours.parameters()), "machine": machine()}
    if not args.no_train:
        t_hf, t_ours = timed_pair(lambda: train_step(hf, mm_token_type_ids=types), lambda: train_step(ours), args.repeats)
        results["train_tokens_per_s"] = {"transformers": n_train_tokens / t_hf, "mimolab": n_train_tokens / t_ours}
        results["train_ratio"] = t_hf / t_ours

    results["decoding"] = [decode_bench(hf, ours, cfg, batch, n, args, dtype) for batch, n in shapes]
    results["machine"]["load_average_after"] = list(os.getloadavg())
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
