"""Quantized inference (``MiMoVL.from_pretrained(path, quantize=...)``, ``mimolab/model/quantize.py``) against the
unquantized model, in one run: weight memory, greedy agreement, logit drift and decode speed.

    OMP_NUM_THREADS=1 python benchmarks/bench_quantize.py [--checkpoint DIR] [--random-preset gpu] \
        [--json benchmarks/results/cpu_bench_quantize.json]

- ``--checkpoint``: a trained checkpoint (default: the cpu pipeline's stage 4 if it exists) with its processor;
  prompts are held-out samples of the world's eval tasks (``mimolab.eval.harness.held_out``: images, chat template).
- ``--random-preset``: a larger preset with its initial random weights (saved to a temporary directory and loaded
  back through ``from_pretrained``), prompts from the same tasks through the world tokenizer.
- Per model: weight bytes (measured on the loaded models and planned from shapes), teacher-forced logits over the
  prompts (max |drift|, and how often the top token agrees), greedy continuations (token-level agreement: equal
  tokens at equal positions over the longer continuation; rows equal), decode tokens/s with no early stop (the
  two models alternating, best of ``--repeats``; wall and CPU time).
- The 7B preset's weight bytes in each mode, planned on the meta device (nothing allocated).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.eval.harness import held_out
from mimolab.model.generation import generate
from mimolab.model.quantize import planned_weight_bytes, quantizable, weight_bytes

TRAINED = Path("/tmp/fresh/runs/cpu/pretrain/stage4_long_context/final")
TASKS = ("counting", "grounding", "chart", "caption")


def prompts(processor, n_per_task: int) -> dict:
    """Left-padded model inputs for held-out samples of TASKS (user turns, think mode)."""
    samples = [s for task in TASKS for s in held_out(task, n_per_task)]
    texts = [processor.apply_chat_template([m for m in s.messages if m["role"] == "user"]) for s in samples]
    images = [im for s in samples for im in s.images]
    inputs = processor(texts, images=images or None)
    return {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}


@torch.no_grad()
def drift(full: MiMoVL, quant: MiMoVL, inputs: dict) -> dict:
    """Teacher-forced logits over every real prompt token: max and mean |difference|, top-1 agreement."""
    a, b = full(**inputs).logits, quant(**inputs).logits
    real = inputs["attention_mask"].bool()
    a, b = a[real], b[real]  # (tokens, vocab)
    diff = (a - b).abs()
    return {"max_abs_logit_drift": diff.max().item(), "mean_abs_logit_drift": diff.mean().item(),
            "max_abs_logit": a.abs().max().item(),
            "top1_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(), "tokens": a.shape[0]}


def greedy(model: MiMoVL, inputs: dict, new_tokens: int, stop: bool) -> list[list[int]]:
    batch = dict(inputs)
    ids, mask = batch.pop("input_ids"), batch.pop("attention_mask")
    eos = {} if stop else {"eos_token_ids": [-1]}  # -1: no token stops a row (speed runs: every row runs to the end)
    return generate(model, ids, mask, max_new_tokens=new_tokens, **eos, **batch).sequences


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """Token-level agreement of two sets of greedy continuations of the same prompts."""
    same = [sum(x == y for x, y in zip(s, t)) / max(len(s), len(t), 1) for s, t in zip(a, b)]
    prefix = [next((i for i, (x, y) in enumerate(zip(s, t)) if x != y), min(len(s), len(t))) for s, t in zip(a, b)]
    return {"token_agreement": sum(same) / len(same), "rows_equal": sum(s == t for s, t in zip(a, b)),
            "rows": len(a), "mean_common_prefix": sum(prefix) / len(prefix),
            "mean_length_full": sum(map(len, a)) / len(a), "mean_length_quantized": sum(map(len, b)) / len(b)}


def decode_speed(full: MiMoVL, quant: MiMoVL, inputs: dict, new_tokens: int, repeats: int) -> dict:
    """Tokens/s of generate (prefill included) with no early stop, the two models alternating; best of repeats."""
    rows = inputs["input_ids"].shape[0]
    times = {"full": [], "quantized": []}
    greedy(full, inputs, 2, stop=False), greedy(quant, inputs, 2, stop=False)  # warm-up
    for _ in range(repeats):
        for name, model in (("full", full), ("quantized", quant)):
            wall, cpu = time.perf_counter(), time.process_time()
            greedy(model, inputs, new_tokens, stop=False)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    out = {"rows": rows, "new_tokens": new_tokens, "repeats": repeats}
    for name, t in times.items():
        out[f"{name}_tokens_per_s_wall"] = rows * new_tokens / min(w for w, _ in t)
        out[f"{name}_tokens_per_s_cpu"] = rows * new_tokens / min(c for _, c in t)
    out["speed_ratio_wall"] = out["quantized_tokens_per_s_wall"] / out["full_tokens_per_s_wall"]
    out["speed_ratio_cpu"] = out["quantized_tokens_per_s_cpu"] / out["full_tokens_per_s_cpu"]
    return out


def compare(path: Path, processor, args, label: str, mode: str = "int8") -> dict:
    full = MiMoVL.from_pretrained(path).eval()
    quant = MiMoVL.from_pretrained(path, quantize=mode).eval()
    vit_equal = all(torch.equal(p, q) for p, q in zip(full.visual.state_dict().values(),
                                                      quant.visual.state_dict().values()))
    inputs = prompts(processor, args.per_task)
    memory = {"full_bytes": weight_bytes(full), "quantized_bytes": weight_bytes(quant),
              "planned_fp32_bytes": planned_weight_bytes(full, "fp32"),
              "quantized_linear_params": sum(m.weight.numel() for _, m in quantizable(full)),
              "params": sum(p.numel() for p in full.parameters())}
    memory["ratio"] = memory["quantized_bytes"] / memory["full_bytes"]
    result = {"checkpoint": label, "mode": mode, "prompts": inputs["input_ids"].shape[0],
              "prompt_tokens": int(inputs["attention_mask"].sum()), "vit_bit_identical": vit_equal,
              "memory": memory, "logits": drift(full, quant, inputs),
              "greedy": agreement(greedy(full, inputs, args.new_tokens, True),
                                  greedy(quant, inputs, args.new_tokens, True)),
              "decode": decode_speed(full, quant, inputs, args.speed_tokens, args.repeats)}
    print(json.dumps(result, indent=1))
    return result


def random_checkpoint(preset: str, tmp: Path):
    """A preset's initial random weights saved with the world tokenizer's processor (what from_pretrained reads)."""
    from mimolab.data.pipeline import world_processor, world_tokenizer

    processor = world_processor(world_tokenizer())
    torch.manual_seed(0)
    MiMoVL.from_preset(preset).save_pretrained(tmp)
    return processor


def seven_b() -> dict:
    with torch.device("meta"):
        model = MiMoVL(MiMoVLConfig.from_name("mimo-vl-7b"))
    out = {mode: planned_weight_bytes(model, mode) for mode in ("fp32", "bf16", "int8", "int4", "nf4")}
    out["params"] = sum(p.numel() for p in model.parameters())
    out["quantized_linear_params"] = sum(m.weight.numel() for _, m in quantizable(model))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=TRAINED if TRAINED.exists() else None)
    parser.add_argument("--random-preset", default="gpu", help="a larger preset, random weights ('' to skip)")
    parser.add_argument("--per-task", type=int, default=2, help="held-out prompts per task (tasks: %s)" % (TASKS,))
    parser.add_argument("--new-tokens", type=int, default=48, help="greedy continuation length (agreement)")
    parser.add_argument("--speed-tokens", type=int, default=32, help="new tokens per timed generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from mimolab.processing import MiMoVLProcessor

    results = {"machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                           "torch_threads": torch.get_num_threads(), "load_average_1_5_15": list(os.getloadavg())},
               "args": {k: v if k != "checkpoint" else str(v and v.name) for k, v in vars(args).items() if k != "json"},
               "seven_b": seven_b()}
    print(json.dumps(results["seven_b"], indent=1))
    if args.checkpoint:
        label = "/".join(args.checkpoint.parts[-2:])  # no machine path in the committed results
        results["trained"] = compare(args.checkpoint, MiMoVLProcessor.from_pretrained(args.checkpoint), args, label)
    if args.random_preset:
        with tempfile.TemporaryDirectory() as tmp:
            processor = random_checkpoint(args.random_preset, Path(tmp) / "ckpt")
            results[f"random_{args.random_preset}"] = compare(Path(tmp) / "ckpt", processor, args,
                                                              f"{args.random_preset} preset, initial random weights")
    results["machine"]["load_average_after"] = list(os.getloadavg())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()



if __name__ == "__main__":
    main()
