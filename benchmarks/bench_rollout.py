"""GRPO's rollout batch: each prompt prefilled once and its KV cache copied into its group's rows
(``generate(..., num_return_sequences=group)``, what GRPOTrainer.rollout does) against the old path,
every prompt and its images repeated ``group`` times before the prefill.

    OMP_NUM_THREADS=1 python benchmarks/bench_rollout.py [--preset cpu --prompts 8 --groups 4 8 --new-tokens 64]

The preset's random weights; prompts with images from the synthetic world (the cpu RL profile's tasks and
difficulty), tokenised as the trainer does; sampling as the trainer does (temperature, media placeholders
suppressed, one seed). Both paths' token ids are checked equal first. Per group size: best-of-N seconds
(wall-clock and CPU) for the prefill alone (one new token) and for the whole rollout batch, the two paths
alternating; all of it as JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mimolab import MiMoVL
from mimolab.data.packing import collate_left_padded
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.data.world import generate as world_sample
from mimolab.model.generation import generate
from mimolab.rl.trainer import RL_INDEX_BASE, rollout_prompt


def rollout_fn(model, prompts, group: int, new_tokens: int, repeat_first: bool, **sampling):
    """One rollout batch; ``repeat_first``: the old path (the prompts repeated before the prefill)."""
    rows = [p for p in prompts for _ in range(group)] if repeat_first else prompts
    batch = collate_left_padded(rows, model.config.pad_token_id)
    ids, mask = batch.pop("input_ids"), batch.pop("attention_mask")
    n = 1 if repeat_first else group
    return lambda k=new_tokens: generate(model, ids, mask, max_new_tokens=k, num_return_sequences=n,
                                         **sampling, **batch)


def timed_pair(fn_a, fn_b, repeats: int) -> dict[str, list[float]]:
    """Best-of-``repeats`` seconds of two functions run alternately (a, b, a, b, ...), after one warm-up
    each: wall-clock and this process's CPU time (on a shared machine at one thread, the CPU time is the
    steadier figure; with more threads it sums them)."""
    fn_a(), fn_b()
    best = {"wall": [float("inf")] * 2, "cpu": [float("inf")] * 2}
    for _ in range(repeats):
        for i, fn in enumerate((fn_a, fn_b)):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best["wall"][i] = min(best["wall"][i], time.perf_counter() - wall)
            best["cpu"][i] = min(best["cpu"][i], time.process_time() - cpu)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--tasks", default="grounding,counting,chart")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MiMoVL.from_preset(args.preset).eval()
    processor = world_processor(world_tokenizer())
    tasks = args.tasks.split(",")
    samples = [world_sample(tasks[i % len(tasks)], RL_INDEX_BASE + i, difficulty=0.1) for i in range(args.prompts)]
    prompts = [rollout_prompt(processor, model.config, s) for s in samples]
    c = model.config
    media = (c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id)
    sampling = dict(do_sample=True, temperature=0.7, seed=0, suppress_token_ids=media)  # as GRPOTrainer.rollout
    patches = sum(len(p.pixel_values) for p in prompts if p.pixel_values is not None)
    results = {"preset": args.preset, "prompts": args.prompts, "new_tokens": args.new_tokens, "groups": {},
               "prompt_tokens": sum(map(len, prompts)), "image_patches": patches, "threads": torch.get_num_threads()}
    for group in args.groups:
        old, new = (rollout_fn(model, prompts, group, args.new_tokens, first, **sampling) for first in (True, False))
        a, b = old(), new()
        assert a.sequences == b.sequences, "the two paths sampled different tokens"
        lp_diff = max(abs(x - y) for ra, rb in zip(a.logprobs, b.logprobs) for x, y in zip(ra, rb))
        prefill = timed_pair(lambda: old(1), lambda: new(1), args.repeats)
        full = timed_pair(old, new, args.repeats)
        results["groups"][group] = {"prefill_s": {clock: {"old": o, "new": n} for clock, (o, n) in prefill.items()},
                                    "rollout_s": {clock: {"old": o, "new": n} for clock, (o, n) in full.items()},
                                    "max_logprob_diff": lp_diff}
        for clock in ("wall", "cpu"):
            (o, n), (po, pn) = full[clock], prefill[clock]
            print(f"group {group} ({clock}): rollout batch old {o:.3f}s new {n:.3f}s, saved {o - n:.3f}s "
                  f"({100 * (1 - n / o):.1f}%); prefill alone old {po:.3f}s new {pn:.3f}s")
        print(f"group {group}: same token ids on both paths, log-probs within {lp_diff:.1e}")
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
