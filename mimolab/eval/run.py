"""A whole evaluation in one call or one command: the world's held-out tasks and any benchmark files,
in think and no-think modes, written as a results table (CSV and markdown) and a seaborn figure.

    rows = run_eval("runs/cpu/pretrain/morl/final", out="runs/eval", modes=("think", "no_think"))

    mimolab eval runs/cpu/pretrain/morl/final --benchmark ~/data/mmbench_dev.tsv --modes think,no_think
"""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.figure import Figure

from mimolab.data.world import Difficulty
from mimolab.eval.harness import evaluate, score_samples
from mimolab.eval.results import TaskScore, save_scores, scores_table

COLUMNS = ("task", "mode", "metric", "decoding", "score", "stderr", "chance", "z", "n")


def write_results(rows: list[TaskScore], out_dir: str | Path, name: str = "results", title: str | None = None) -> dict:
    """``<name>.csv``, ``<name>.md``, ``<name>.json`` (per-sample scores too) and ``<name>.png`` in ``out_dir``."""
    import pandas as pd
    import seaborn as sns

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = [{k: v for k, v in r.as_dict().items() if k in COLUMNS} for r in rows]
    paths = {"csv": out_dir / f"{name}.csv", "md": out_dir / f"{name}.md", "json": out_dir / f"{name}.json",
             "png": out_dir / f"{name}.png"}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    modes = sorted({r.mode for r in rows})
    lines = []
    for mode in modes:
        lines += [f"**{mode}**", "", scores_table([r for r in rows if r.mode == mode]), ""]
    paths["md"].write_text("\n".join(lines))
    save_scores(rows, paths["json"])

    frame = pd.DataFrame(table)
    fig = Figure(figsize=(max(6.0, 0.7 * frame["task"].nunique() * len(modes)), 3.8))  # no pyplot: no global state
    ax = fig.subplots()
    sns.barplot(frame, x="task", y="score", hue="mode", ax=ax, palette="deep")
    chance = frame.groupby("task", sort=False)["chance"].first()
    ax.scatter(range(len(chance)), chance.values, marker="_", s=600, color="black", zorder=3, label="chance")
    ax.set(ylim=(0, 1), ylabel="held-out score", xlabel="", title=title or "score per task (black: measured chance)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=110)
    return paths


def run_eval(checkpoint: str | Path, *, tasks: list[str] | None = None, n: int = 40, difficulty: Difficulty = 0.5,
             benchmarks: list[str | Path] = (), modes: tuple[str, ...] = ("think",), out: str | Path | None = None,
             limit: int | None = None, progress: bool = True, quantize: str | None = None) -> list[TaskScore]:
    """Evaluate a checkpoint directory on world tasks (``tasks=[]``: none) and benchmark files, in each
    mode ("think", "no_think"); with ``out``, write the results there (see ``write_results``). ``quantize``:
    the language model's linear layers in "int8" (or "int4" / "nf4" on a GPU; ``mimolab.model.quantize``)."""
    from tqdm.auto import tqdm

    from mimolab.eval.benchmarks import load_benchmark
    from mimolab.model.checkpoint import check_tokenizer, read_config
    from mimolab.model.vlm import MiMoVL
    from mimolab.processing import MiMoVLProcessor

    bad = [m for m in modes if m not in ("think", "no_think")]
    if bad:
        raise ValueError(f"modes must be 'think' or 'no_think', not {bad}")
    if quantize is not None:
        from mimolab.model.quantize import check_quantize
        check_quantize(quantize, "cpu")  # before the processor and weights are read
    processor = MiMoVLProcessor.from_pretrained(checkpoint)
    check_tokenizer(read_config(checkpoint), processor.tokenizer, checkpoint)  # before any weight is read
    model = MiMoVL.from_pretrained(checkpoint, quantize=quantize).eval()
    files = [(Path(b).stem, *load_benchmark(b, limit=limit)) for b in benchmarks]
    rows: list[TaskScore] = []
    for mode in modes:
        thinking = mode == "think"
        if tasks is None or tasks:
            rows += evaluate(model, processor, tasks, n=n, difficulty=difficulty, progress=progress, thinking=thinking)
        for name, samples, _ in tqdm(files, desc=f"benchmarks ({mode})", disable=not progress or not files):
            rows.append(score_samples(model, processor, samples[0].task, samples, thinking=thinking, name=name))
    if out is not None:
        write_results(rows, out, title=f"{Path(checkpoint).name}: held-out scores")
    return rows


__all__ = ["run_eval", "write_results"]
