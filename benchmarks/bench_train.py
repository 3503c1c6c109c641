"""Training-step throughput of the Trainer on one device, per precision setting, on the same initial weights and
the same packed rows of the world's stage-3 mixture; against transformers; and where a step's time goes.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py --device cpu --preset cpu --vs-transformers --profile
    python benchmarks/bench_train.py --preset gpu --device cuda --row-tokens 4096 --rows 4   # issue 4's GPU options

1. The Trainer's optimizer steps per setting (fp32; bf16 autocast with float32 master weights; on a GPU also bf16
   with activation checkpointing), each setting its own copy of the same weights and data stream, the settings
   taking turns step by step on a CPU (a slow phase of a shared machine hits all alike; on a GPU one after the
   other, for the peak memory): the first step's loss (the settings see the same rows, so bf16 must match fp32
   closely), tokens/s (median over the steps after two warm-ups) by the wall clock (the Trainer's own timing,
   which leaves out drawing the rows) and by this process's CPU time (less the drawing), MFU, peak memory.
2. ``--vs-transformers``: transformers' Qwen2_5_VLForConditionalGeneration and mimolab on the same weights
   (bench_model.model_pair), the same packed rows (transformers reads the packing from restarting text
   positions, as its padding-free collator does) and the same dtype: one optimizer step each (forward, loss,
   backward, clip, AdamW), alternating, over ``--distinct-steps`` steps' rows in turn, each step's median of
   ``--repeats`` (wall and CPU; the best beside) summed. mimolab's is the Trainer's step. ``+compile`` settings
   also time transformers with its layers compiled the same way. The fp32 first losses must agree to float
   error (checked).
3. ``--profile``: torch.profiler over ``--profile-steps`` Trainer steps per setting, each op's own time
   summed by kind (matrix products, attention, softmax + cross-entropy, casts and copies, optimizer, other
   ops), the time outside any op (Python) the rest of the wall time; the vision tower's forward beside.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import machine, model_pair, timed_all  # noqa: E402

import mimolab  # noqa: E402
from mimolab import MiMoVL, MiMoVLConfig  # noqa: E402
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer  # noqa: E402
from mimolab.model.vlm import mask_segment_starts  # noqa: E402
from mimolab.train import Trainer  # noqa: E402
from mimolab.train.stage import Stage, load_stage  # noqa: E402

SETTINGS = {"fp32": {"bf16": False, "compile": False}, "bf16": {"bf16": True, "compile": False},  # each explicit:
            "fp32+compile": {"bf16": False, "compile": True},  # the stage's profile may set bf16 or compile
            "bf16+compile": {"bf16": True, "compile": True},
            "bf16+checkpointing": {"bf16": True, "gradient_checkpointing": True, "compile": False}}
# op names -> kind, for the profile (the optimizer is recognised by its enclosing "Optimizer.*" range)
KINDS = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
                             "aten::convolution_backward"),
         "softmax + cross-entropy": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
                                     "aten::nll_loss_backward"),
         "casts + copies": ("aten::copy_", "aten::_to_copy")}


def make_trainer(setting: str, args, processor, config: MiMoVLConfig, model: MiMoVL | None = None) -> Trainer:
    """A Trainer of stage 3's mixture at the given shapes and setting; fresh weights of seed 0 unless given."""
    known = {f.name for f in dataclasses.fields(Stage)}  # a checkout from before compile has no such field
    stage = dataclasses.replace(load_stage("stage3_multimodal", "cpu"), steps=10**6, warmup_steps=1,
                                row_tokens=args.row_tokens, rows_per_step=args.rows, checkpoint_every=10**9,
                                **{k: v for k, v in SETTINGS[setting].items() if k in known})
    if model is None:
        torch.manual_seed(0)
        model = MiMoVL(config).to(args.device)
    sampler = world_mixture(stage.shares, processor, config, max_length=stage.row_tokens, difficulty=stage.difficulty,
                            seed=0)
    return Trainer(model, stage, sampler, tempfile.mkdtemp(dir=args.run_root))  # removed with run_root by main


def timed_step(trainer: Trainer) -> dict:
    """One optimizer step's record, with ``cpu_tokens_per_s``: tokens over the step's CPU seconds, less those
    spent drawing and packing the rows (which the Trainer's own ``tokens_per_s`` leaves out too)."""
    draw, drawing = trainer.next_rows, []

    def next_rows():
        start = time.process_time()
        rows = draw()
        drawing.append(time.process_time() - start)
        return rows

    trainer.next_rows = next_rows  # this instance, this step
    start = time.process_time()
    try:
        record = trainer.train_step()
    finally:
        trainer.next_rows = draw
    return {**record, "cpu_tokens_per_s": record["tokens"] / (time.process_time() - start - sum(drawing))}


def summarise(setting: str, history: list[dict], peak: float | None) -> dict:
    timed = history[2:] or history
    median = lambda key: statistics.median(r[key] for r in timed)  # noqa: E731
    return {"setting": setting, "first_loss": round(history[0]["loss"], 4),
            "tokens_per_s": round(median("tokens_per_s")), "cpu_tokens_per_s": round(median("cpu_tokens_per_s")),
            "mfu": round(median("mfu"), 4) if timed[0]["mfu"] is not None else None,
            "peak_gib": round(peak, 2) if peak is not None else None}


def trainer_throughput(settings: list[str], args, processor, config) -> list[dict]:
    """Part 1: the settings take turns step by step on a CPU; on a GPU each runs alone (its peak memory)."""
    if args.device == "cuda":
        results = []
        for s in settings:
            trainer = make_trainer(s, args, processor, config)
            torch.cuda.reset_peak_memory_stats()
            history = [timed_step(trainer) for _ in range(args.steps)]
            results.append(summarise(s, history, torch.cuda.max_memory_allocated() / 2**30))
            del trainer
        return results
    trainers = {s: make_trainer(s, args, processor, config) for s in settings}
    histories = {s: [] for s in settings}
    for _ in range(args.steps):
        for s, trainer in trainers.items():
            histories[s].append(timed_step(trainer))
    return [summarise(s, histories[s], None) for s in settings]


def transformers_inputs(row) -> dict:
    """A packed row as transformers reads it: text positions restarting at each sample (its padding-free packing:
    the attention mask follows from them) ahead of the 3D positions, labels never crossing a sample boundary; no
    padding tail (its padding-free collator adds none; the Trainer drops it too)."""
    from mimolab.train.loop import without_padding  # here: part 1 also runs on checkouts from before it

    row = without_padding(row)
    cu = row.cu_seqlens.long()
    text_positions = torch.arange(row.input_ids.shape[1]) - torch.repeat_interleave(cu[:-1], cu[1:] - cu[:-1])
    inputs = {k: v for k, v in row.model_inputs().items() if k not in ("cu_seqlens", "position_ids", "labels")}
    return {**inputs, "position_ids": torch.cat([text_positions[None, None], row.position_ids]),
            "labels": mask_segment_starts(row.labels, row.cu_seqlens), "use_cache": False}


def transformers_step(model, optimizer, inputs: list[dict], autocast, grad_clip: float) -> float:
    """One optimizer step of transformers' model over the rows, each row's mean loss weighted by its share of the
    step's targets (as the Trainer's token weighting); returns the step's loss."""
    model.train()
    n_targets = sum(int((x["labels"][:, 1:] != -100).sum()) for x in inputs)
    total = 0.0
    for x in inputs:
        with autocast:
            out = model(**{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in x.items()})
        loss = out.loss * (int((x["labels"][:, 1:] != -100).sum()) / n_targets)
        loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def versus_transformers(setting: str, args, processor) -> dict:
    """Part 2 for one setting: ``--distinct-steps`` different steps' rows, the same for all; transformers and the
    Trainer taking turns step by step, each side's median of ``--repeats`` per step, summed over the steps. A
    ``+compile`` setting also times transformers with its decoder layers and ViT blocks compiled the same way
    (a copy of the same weights): the ratio against each."""
    torch.manual_seed(0)
    hf, ours, config = model_pair(args.preset, args.device)
    trainer = make_trainer(setting, args, processor, config, model=ours)
    models = {"transformers": hf}
    if SETTINGS[setting].get("compile"):
        models["transformers compiled"] = copy.deepcopy(hf)
        for block in [*models["transformers compiled"].model.language_model.layers,
                      *models["transformers compiled"].model.visual.blocks]:
            block.compile(dynamic=True)
    steps = [trainer.next_rows() for _ in range(args.distinct_steps)]
    inputs = [[transformers_inputs(r) for r in rows] for rows in steps]
    # the Trainer's optimizer settings: fused AdamW, betas (0.9, 0.95), no weight decay at stage 3's cpu profile
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=trainer.stage.lr["llm"], betas=(0.9, 0.95),
                                          weight_decay=trainer.stage.weight_decay, fused=True)
                  for name, m in models.items()}
    autocast = trainer.stage.autocast(torch.device(args.device))

    def sides(k: int) -> dict:
        def ours_on():
            trainer.next_rows = lambda: steps[k]
            return trainer.train_step()["loss"]

        theirs = {name: (lambda m=m, o=optimizers[name]: transformers_step(m, o, inputs[k], autocast,
                                                                           trainer.stage.grad_clip))
                  for name, m in models.items()}
        return {**theirs, "mimolab": ours_on}

    losses = {name: fn() for name, fn in sides(0).items()}
    if setting.startswith("fp32") and abs(losses["transformers"] - losses["mimolab"]) > 1e-4 * abs(losses["mimolab"]):
        raise RuntimeError(f"fp32 first losses differ: {losses}; the two models do not compute the same step")
    for k in range(len(steps)):  # warm-up: a compiled layer meets every step's lengths before the timings
        for fn in sides(k).values():
            fn()
    # then the steps in turn, each side's median of repeats per step, summed: training never meets the same rows
    # twice in a row, and timing one step's rows again and again would hide what other lengths cost (buffers). The
    # median, not the best: an eager step's time varies by a third from step to step (why was not investigated), a
    # compiled one's by a tenth, and the best of a few rewards variance; the sums of the best are kept beside it
    timings: list[dict] = [{} for _ in steps]
    for _ in range(args.repeats):
        for k in range(len(steps)):
            for name, clocks in timed_all(sides(k), 1, warm_up=False).items():
                for clock, seconds in clocks.items():
                    timings[k].setdefault(name, {}).setdefault(clock, []).append(seconds)
    names = list(timings[0])
    median = {n: {c: sum(statistics.median(t[n][c]) for t in timings) for c in ("wall", "cpu")} for n in names}
    best = {n: {c: sum(min(t[n][c]) for t in timings) for c in ("wall", "cpu")} for n in names}
    tokens = sum(r.n_tokens for rows in steps for r in rows)
    per_s = lambda clock, of=median: {k: round(tokens / t[clock]) for k, t in of.items()}  # noqa: E731
    ratio = lambda clock, ref="transformers", of=median: round(of[ref][clock] / of["mimolab"][clock], 2)  # noqa: E731
    result = {"setting": setting, "tokens_per_step": round(tokens / len(steps)), "distinct_steps": len(steps),
              "repeats": args.repeats, "first_loss": {k: round(v, 6) for k, v in losses.items()},
              "tokens_per_s": per_s("wall"), "cpu_tokens_per_s": per_s("cpu"), "ratio": ratio("wall"),
              "cpu_ratio": ratio("cpu"), "best_tokens_per_s": per_s("wall", best),
              "best_ratio": ratio("wall", of=best)}
    if "transformers compiled" in names:
        result |= {"ratio_to_compiled": ratio("wall", "transformers compiled"),
                   "cpu_ratio_to_compiled": ratio("cpu", "transformers compiled"),
                   "best_ratio_to_compiled": ratio("wall", "transformers compiled", best)}
    return result


def kind_of(event) -> str:
    parent = event
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return "optimizer"
        parent = parent.cpu_parent
    if "scaled_dot_product" in event.name:
        return "attention"
    return next((kind for kind, names in KINDS.items() if event.name in names), "other ops")


def profile_setting(setting: str, args, processor, config) -> dict:
    """Part 3 for one setting: milliseconds per step by kind of op (each op's own time), and outside any op."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    trainer = make_trainer(setting, args, processor, config)
    vision_forward = trainer.model.visual.forward

    def annotated(*a, **kw):
        with record_function("vision tower forward"):
            return vision_forward(*a, **kw)

    trainer.model.visual.forward = annotated
    for _ in range(2):
        trainer.train_step()
    rows = [trainer.next_rows() for _ in range(args.profile_steps)]  # drawn before, so the profile holds no data work
    queue = iter(rows)
    trainer.next_rows = lambda: next(queue)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(args.profile_steps):
            trainer.train_step()
        wall = time.perf_counter() - start
    per_step = lambda us: round(us / 1e3 / args.profile_steps, 1)  # noqa: E731
    kinds: dict[str, float] = {}
    for event in prof.events():
        if event.name != "vision tower forward":
            kinds[kind_of(event)] = kinds.get(kind_of(event), 0.0) + event.self_cpu_time_total
    vision = sum(e.cpu_time_total for e in prof.events() if e.name == "vision tower forward")
    ms = {k: per_step(v) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}
    ms["outside ops (Python)"] = round(wall * 1e3 / args.profile_steps - sum(ms.values()), 1)
    return {"setting": setting, "step_ms": round(wall * 1e3 / args.profile_steps, 1), "ms_per_step": ms,
            "vision_forward_ms": per_step(vision)}


def bf16_units(n: int = 1024) -> dict:
    """The CPU's bfloat16 matrix instructions (what bf16 autocast gains from) and an n x n matrix product's GFLOP/s
    per dtype, best of 5 (measured here, not by the library: the bench also runs on older checkouts)."""
    units = [name for name, has in (("AMX", torch.cpu._is_amx_tile_supported()),
                                    ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported())) if has]
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        seconds = []
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            seconds.append(time.perf_counter() - start)
        peaks[str(dtype).removeprefix("torch.")] = round(2 * n**3 / min(seconds) / 1e9)
    return {"cpu_bf16_units": units, "matmul_gflops": peaks}


def print_tables(summary: dict) -> None:
    print("| setting | first loss | tokens/s (wall) | tokens/s (CPU time) | MFU | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in summary["trainer"]:
        print(f"| {r['setting']} | {r['first_loss']} | {r['tokens_per_s']:,} | {r['cpu_tokens_per_s']:,} | {r['mfu']} "
              f"| {r['peak_gib']} |")
    if summary.get("vs_transformers"):
        print("\n| setting | first loss transformers / mimolab | tokens/s transformers / mimolab (wall) | ratio "
              "| tokens/s (CPU time) | ratio |\n|---|---|---|---|---|---|")
        for r in summary["vs_transformers"]:
            t, c, loss = r["tokens_per_s"], r["cpu_tokens_per_s"], r["first_loss"]
            print(f"| {r['setting']} | {loss['transformers']} / {loss['mimolab']} | {t['transformers']:,} / "
                  f"{t['mimolab']:,} | {r['ratio']} | {c['transformers']:,} / {c['mimolab']:,} | {r['cpu_ratio']} |")
            if "ratio_to_compiled" in r:
                print(f"| {r['setting']}, transformers compiled | {loss['transformers compiled']} / {loss['mimolab']} | "
                      f"{t['transformers compiled']:,} / {t['mimolab']:,} | {r['ratio_to_compiled']} | "
                      f"{c['transformers compiled']:,} / {c['mimolab']:,} | {r['cpu_ratio_to_compiled']} |")
    for p in summary.get("profile", []):
        print(f"\n{p['setting']}: {p['step_ms']} ms per step (vision tower forward {p['vision_forward_ms']} ms)")
        for kind, ms in p["ms_per_step"].items():
            print(f"  {kind:<26} {ms:8.1f} ms  {ms / p['step_ms']:6.1%}")


def mimolab_commit() -> str:
    """The git commit of the mimolab checkout measured (``+dirty`` with uncommitted changes): a before/after pair
    names its two checkouts without a machine path."""
    import subprocess

    root = Path(mimolab.__file__).parent.parent
    git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--row-tokens", type=int, default=1024, help="stage 3's cpu profile: 1024")
    parser.add_argument("--rows", type=int, default=2, help="packed rows per optimizer step (stage 3's cpu profile: 2)")
    parser.add_argument("--settings", help="comma-separated; default fp32,bf16 (and bf16+checkpointing on a GPU)")
    parser.add_argument("--vs-transformers", action="store_true", help="also time transformers' steps (part 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each step for --vs-transformers")
    parser.add_argument("--distinct-steps", type=int, default=6,
                        help="--vs-transformers: steps of different rows timed (1: one step's rows every time)")
    parser.add_argument("--profile", action="store_true", help="also break a step's time down (part 3)")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    settings = (args.settings or ",".join(SETTINGS if args.device == "cuda" else ("fp32", "bf16"))).split(",")
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {list(SETTINGS)}")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as args.run_root:  # the trainers' run folders
        run(args, settings)


def run(args, settings: list[str]) -> None:
    config = MiMoVLConfig.from_name(args.preset)
    processor = world_processor(world_tokenizer())
    summary = {"preset": args.preset, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "machine": {**machine(), **(bf16_units() if args.device == "cpu" else {})},
               "mimolab": mimolab_commit(),
               "torch": torch.__version__, "row_tokens": args.row_tokens, "rows": args.rows,
               "trainer": trainer_throughput(settings, args, processor, config)}
    if args.vs_transformers:
        compared = [s for s in settings if "checkpointing" not in s]
        summary["vs_transformers"] = [versus_transformers(s, args, processor) for s in compared]
    if args.profile:
        summary["profile"] = [profile_setting(s, args, processor, config) for s in settings]
    summary["machine"]["load_average_after"] = list(os.getloadavg())
    print_tables(summary)
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
