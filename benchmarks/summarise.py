"""One table of issue 23's figures, read from the committed JSON files in benchmarks/results/ (nothing typed in).

    python benchmarks/summarise.py            # print the table
    python benchmarks/summarise.py --write    # into benchmarks/README.md (and the 7B memory table into README.md)

Each row: what is compared, the two absolute figures (mimolab / the reference, or quantized / float), their ratio
(wall-clock, CPU time in brackets where the file has it), the issue's target, the machine (from the file) and
the command that wrote the file. Ratios > 1: mimolab faster (or, for memory, the quantized model larger).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
START, END = "<!-- summary:start (benchmarks/summarise.py --write) -->", "<!-- summary:end -->"
START_7B = "<!-- summary:start 7b memory (benchmarks/summarise.py --write) -->"
START_AGAINST = "<!-- summary:start main job against (benchmarks/summarise.py --write) -->"
COMMANDS = {
    "cpu_bench_train_before.json": "`OMP_NUM_THREADS=1 PYTHONPATH=<checkout of 6049a3e> "
                                   "python benchmarks/bench_train.py --device cpu --settings fp32 --steps 8 --profile`",
    "cpu_bench_train.json": "`OMP_NUM_THREADS=1 python benchmarks/bench_train.py --device cpu --settings "
                            "fp32,bf16,fp32+compile,bf16+compile --steps 8 --vs-transformers --repeats 3 --profile`",
    "cpu_bench_decode.json": "`OMP_NUM_THREADS=1 python benchmarks/bench_model.py --preset cpu --no-train "
                             "--shapes 8x128 32x256 --repeats 5`",
    "cpu_bench_grpo.json": "`OMP_NUM_THREADS=1 python benchmarks/bench_grpo.py --prompts 8 --group 4 --new-tokens 64 "
                           "--steps 4`",
    "cpu_bench_grpo_trl_bf16.json": "`OMP_NUM_THREADS=1 python benchmarks/bench_grpo.py --prompts 8 --group 4 "
                                    "--new-tokens 64 --steps 4 --trl-bf16`",
    "cpu_bench_quantize.json": "`OMP_NUM_THREADS=1 python benchmarks/bench_quantize.py`",
    "cpu_main_job.json": "`make pipeline` on a fresh clone, then `python benchmarks/main_job.py runs/cpu/pretrain`",
    "h200_bench_model_fp32.json": "`python benchmarks/bench_model.py --preset gpu --device cuda --dtype float32`",
    "h200_bench_model_bf16.json": "`python benchmarks/bench_model.py --preset gpu --device cuda --dtype bfloat16`",
}


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def machine(data: dict) -> str:
    m = data.get("machine", {})
    load_avg = m.get("load_average_1_5_15") or m.get("load_average_start")
    cores = f", {m['cores']} cores" if "cores" in m else ""
    where = f"{m.get('cpu', '?')}{cores}, torch {m.get('torch', '?')}"
    return where + (f", load {load_avg[0]:.1f}" if load_avg else "")


def n(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def ratio(wall: float, cpu: float | None = None) -> str:
    return f"{wall:.2f}" + (f" ({cpu:.2f})" if cpu is not None else "")


def train_rows() -> list[list[str]]:
    before, now = load("cpu_bench_train_before.json"), load("cpu_bench_train.json")
    base = before["trainer"][0]
    rows = []
    for t in now["trainer"]:
        rows.append([f"train tokens/s, cpu preset, {t['setting']} vs 6049a3e fp32",
                     f"{n(t['tokens_per_s'])} / {n(base['tokens_per_s'])}",
                     ratio(t["tokens_per_s"] / base["tokens_per_s"], t["cpu_tokens_per_s"] / base["cpu_tokens_per_s"]),
                     ">= 2.5", machine(now), COMMANDS["cpu_bench_train.json"] + "; before: "
                     + COMMANDS["cpu_bench_train_before.json"]])
    for t in now["vs_transformers"]:
        references = ["transformers"] + (["transformers compiled"] if "transformers compiled" in t["tokens_per_s"] else [])
        for ref in references:
            how = {"transformers": " (eager)" if "compile" in t["setting"] else "",
                   "transformers compiled": " with its layers compiled the same way"}[ref]
            rows.append([f"train tokens/s, cpu preset, {t['setting']}: mimolab / transformers{how} (same weights, "
                         f"rows, dtype)", f"{n(t['tokens_per_s']['mimolab'])} / {n(t['tokens_per_s'][ref])}",
                         ratio(t["tokens_per_s"]["mimolab"] / t["tokens_per_s"][ref],
                               t["cpu_tokens_per_s"]["mimolab"] / t["cpu_tokens_per_s"][ref]),
                         ">= 2", machine(now), COMMANDS["cpu_bench_train.json"]])
    return rows


def decode_rows() -> list[list[str]]:
    data = load("cpu_bench_decode.json")
    rows = []
    for d in data["decoding"]:
        for side, label in (("mimolab", "float32"), ("mimolab_fast", "bf16 prefill, decode matmuls and KV cache")):
            wall, cpu = d["wall"]["decode_tokens_per_s"], d["cpu"]["decode_tokens_per_s"]
            rows.append([f"greedy decode tokens/s, cpu preset, {d['batch']} x {d['new_tokens']}, mimolab {label} / "
                         f"transformers float32 (generate: {d['wall'][f'generate_ratio_{side}']:.2f}; rows equal "
                         f"{d['rows_equal_to_transformers'][side]}/{d['batch']})",
                         f"{n(wall[side])} / {n(wall['transformers'])}",
                         ratio(wall[side] / wall["transformers"], cpu[side] / cpu["transformers"]),
                         ">= 2", machine(data), COMMANDS["cpu_bench_decode.json"]])
    return rows


def grpo_rows() -> list[list[str]]:
    rows = []
    for name, trl in (("cpu_bench_grpo.json", "TRL float32"), ("cpu_bench_grpo_trl_bf16.json", "TRL bf16=True")):
        data = load(name)
        ref = data["seconds"]["transformers+trl"]
        # kl_every 0: neither computes reference log-probs (TRL at beta 0); before it, mimolab did every step
        work = " (no reference forward on either side)" if data.get("kl_every", 1) == 0 else \
            " (mimolab with a reference forward each step)"
        for side, label in (("mimolab", "float32"), ("mimolab_bf16", "bf16")):
            s = data["seconds"][side]
            rows.append([f"GRPO step seconds (median), cpu preset, {data['prompts']} prompts x group {data['group']} x "
                         f"{data['new_tokens']} tokens: mimolab {label} / {trl}{work}",
                         f"{s['step_wall_median']:.2f} s / {ref['step_wall_median']:.2f} s",
                         ratio(ref["step_wall_median"] / s["step_wall_median"],
                               ref["step_cpu_median"] / s["step_cpu_median"]),
                         ">= 2", machine(data), COMMANDS[name]])
    return rows


def main_job_rows() -> list[list[str]]:
    data = load("cpu_main_job.json")
    phases = ", ".join(f"{k.split(' (')[0]} {v / 60:.1f}" for k, v in data["seconds"].items())
    return [[f"main job (`make pipeline`, {data['profile']} profile) minutes at {data['commit']}, setup excluded: {phases}",
             f"{data['total_minutes']:.1f}", "", "<= 25", machine(data), COMMANDS["cpu_main_job.json"]]]


def quantize_rows() -> list[list[str]]:
    data = load("cpu_bench_quantize.json")
    rows, where, cmd = [], machine(data), COMMANDS["cpu_bench_quantize.json"]
    for key, label in (("trained", "cpu preset, trained (stage 4)"), *[(k, f"{k[7:]} preset, random weights")
                                                                      for k in data if k.startswith("random_")]):
        q = data.get(key)
        if not q:
            continue
        m, g, lg, d = q["memory"], q["greedy"], q["logits"], q["decode"]
        what = f"{q['mode']}, {label}"
        rows += [[f"weight memory {what}: quantized / float32", f"{m['quantized_bytes'] / 2**20:.1f} MiB / "
                  f"{m['full_bytes'] / 2**20:.1f} MiB", f"{m['ratio']:.2f}", "", where, cmd],
                 [f"greedy token agreement {what}, {g['rows']} held-out prompts (rows equal)",
                  f"{g['token_agreement']:.3f} ({g['rows_equal']}/{g['rows']})", "", "", where, cmd],
                 [f"max logit drift {what} (max abs logit; top-1 agreement over {lg['tokens']} prompt tokens)",
                  f"{lg['max_abs_logit_drift']:.3f} ({lg['max_abs_logit']:.1f}; {lg['top1_agreement']:.3f})", "", "",
                  where, cmd],
                 [f"generate tokens/s (prefill included) {what}, {d['rows']} x {d['new_tokens']}: quantized / float32",
                  f"{n(d['quantized_tokens_per_s_wall'])} / {n(d['full_tokens_per_s_wall'])}",
                  ratio(d["speed_ratio_wall"], d["speed_ratio_cpu"]), "", where, cmd]]
    seven = data["seven_b"]
    for mode in ("fp32", "bf16", "int8", "int4", "nf4"):
        rows.append([f"mimo-vl-7b weight memory, {mode} (planned on the meta device) / bf16",
                     f"{seven[mode] / 2**30:.2f} GiB / {seven['bf16'] / 2**30:.2f} GiB",
                     f"{seven[mode] / seven['bf16']:.2f}",
                     "", "shapes only", cmd])
    return rows


def h200_rows() -> list[list[str]]:
    rows = []
    for name in ("h200_bench_model_fp32.json", "h200_bench_model_bf16.json"):
        data = load(name)
        for what, key in (("train tokens/s", "train"), ("decode tokens/s", "decode")):
            v = data[f"{key}_tokens_per_s"]
            rows.append([f"{what}, gpu preset, {data['dtype']}, batch 4: mimolab / transformers",
                         f"{n(v['mimolab'])} / {n(v['transformers'])}", ratio(v["mimolab"] / v["transformers"]), "",
                         "NVIDIA H200, torch 2.11.0+cu130 (before issue 23)", COMMANDS[name]])
    return rows


def table() -> str:
    """The rows, with each command written once below the table and named by its number in the rows."""
    rows = train_rows() + decode_rows() + grpo_rows() + main_job_rows() + quantize_rows() + h200_rows()
    commands: dict[str, int] = {}
    for r in rows:
        r[-1] = f"({commands.setdefault(r[-1], len(commands) + 1)})"
    head = ["figure", "measured (mimolab / reference)", "ratio wall (CPU)", "target", "machine", "command"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines + [""] + [f"{i}. {c}" for c, i in commands.items()])


def seven_b_table() -> str:
    """The 7B preset's weight memory per mode (the repository README's table)."""
    seven = load("cpu_bench_quantize.json")["seven_b"]
    lines = ["| mode | weights | of bf16 |", "|---|---|---|"]
    lines += [f"| {mode} | {seven[mode] / 2**30:.2f} GiB | {seven[mode] / seven['bf16']:.2f} |"
              for mode in ("fp32", "bf16", "int8", "int4", "nf4")]
    return "\n".join(lines)


def against_table() -> str:
    """The main job's results against the earlier run it was compared with (``main_job.py --against``), per task:
    final evaluation, MORL's after-scores and its changes, paired on the same held-out samples."""
    data = load("cpu_main_job.json")
    other = data["against"]
    lines = [f"| part | task | {data['commit']} | {other['commit']} | difference [95% CI] | n |", "|---|---|---|---|---|---|"]
    for key, part in (("final", "final evaluation"), ("morl_after", "MORL after"), ("morl_change", "MORL change")):
        for task, row in sorted(other[key].items()):
            new, old = (f"{row[k]:.3f}" if k in row else "" for k in ("new", "old"))
            low, high = row["ci95"]
            lines.append(f"| {part} | {task} | {new} | {old} | {row['difference']:+.3f} [{low:+.3f}, {high:+.3f}] "
                         f"| {row['n']} |")
    return "\n".join(lines)


def write_between(readme: Path, start: str, text: str) -> None:
    """Replace what lies between ``start`` and END in ``readme`` with ``text``."""
    content = readme.read_text()
    if start not in content or END not in content.split(start, 1)[-1]:
        raise ValueError(f"{readme} has no {start} ... {END} markers to write the table between")
    before, rest = content.split(start, 1)
    readme.write_text(before + start + "\n" + text + "\n" + END + rest.split(END, 1)[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    if parser.parse_args().write:
        write_between(HERE / "README.md", START, table())
        write_between(HERE / "README.md", START_AGAINST, against_table())
        write_between(HERE.parent / "README.md", START_7B, seven_b_table())
    print(table())
