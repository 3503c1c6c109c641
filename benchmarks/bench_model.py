"""mimolab vs transformers on the same weights and inputs: training and decoding throughput.

    python benchmarks/bench_model.py --preset cpu [--device cuda --dtype bfloat16]

Forward+backward tokens/s on a batch of image+text rows; for greedy generation over a batch of
prompts of different lengths (KV cache, no early stop): the prefill time, the steady-state decode
tokens/s (new tokens after the first, over the time after prefill) and end-to-end tokens/s. Timings are best-of-N, the two libraries alternating. Both models get the same weights
(transformers writes a checkpoint, mimolab loads it). Ratios > 1 mean mimolab is faster.
Targets (issue 2): decode >= 1.5x, training >= 1.0x.
"""

from __future__ import annotations

import argparse
import copy
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text-len", type=int, default=192)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    cfg = MiMoVLConfig.from_name(args.preset)
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict())))
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = MiMoVL.from_pretrained(d)
    hf, ours = hf.to(args.device, dtype), ours.to(args.device, dtype)
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
               "params": sum(p.numel() for p in ours.parameters())}
    t_hf, t_ours = timed_pair(lambda: train_step(hf, mm_token_type_ids=types), lambda: train_step(ours), args.repeats)
    results["train_tokens_per_s"] = {"transformers": n_train_tokens / t_hf, "mimolab": n_train_tokens / t_ours}
    results["train_ratio"] = t_hf / t_ours

    ids, mask, pixels, grids, types = (t.to(args.device) for t in make_batch(cfg, args.batch, args.text_len // 2, [1, 8, 8], left_pad=True, seed=1))
    pixels = pixels.to(dtype)
    hf.eval(), ours.eval()

    @torch.no_grad()
    def hf_generate(n: int) -> None:
        hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grids, mm_token_type_ids=types,
                    max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=cfg.pad_token_id)

    def our_generate(n: int) -> None:
        generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=n, eos_token_ids=[-1])

    n = args.new_tokens
    prefill = timed_pair(lambda: hf_generate(1), lambda: our_generate(1), args.repeats)
    full = timed_pair(lambda: hf_generate(n), lambda: our_generate(n), args.repeats)
    names = ("transformers", "mimolab")
    # steady-state decoding excludes the prompt's prefill (the first token), as serving engines report it
    results["prefill_ms"] = {k: 1e3 * t for k, t in zip(names, prefill)}
    results["decode_tokens_per_s"] = {k: args.batch * (n - 1) / (f - p) for k, f, p in zip(names, full, prefill)}
    results["decode_ratio"] = results["decode_tokens_per_s"]["mimolab"] / results["decode_tokens_per_s"]["transformers"]
    results["generate_tokens_per_s"] = {k: args.batch * n / f for k, f in zip(names, full)}
    results["generate_ratio"] = full[0] / full[1]
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
