"""The pipeline's report: markdown with tables and figures, written into the run directory from
what the run measured (``metrics.jsonl``, ``eval.json``, ``final_eval.json``, ``morl/morl.json``);
nothing typed in. Figures are drawn on ``matplotlib.figure.Figure`` (no pyplot, no global backend)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from matplotlib.figure import Figure

from mimolab.eval.results import TaskScore, changes_table, scores_table
from mimolab.pipeline.morl import MorlResult
from mimolab.pipeline.study_results import studies_summary
from mimolab.train.tracking import read_metrics
from mimolab.viz import plot_scores

TIMINGS = "timings.json"  # wall-clock seconds per phase of the main job, written by run_pipeline


def smooth(values: list[float], window: int = 10) -> list[float]:
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-window:]
        out.append(sum(acc) / len(acc))
    return out


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def loss_figure(run_dir: Path, stages: list[str], path: Path) -> Path:
    """Training loss against tokens seen, all stages end to end, stage boundaries marked."""
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    seen = 0
    for name in stages:
        records = read_metrics(run_dir / name, key="loss")
        if not records:
            continue
        tokens = [seen + t for t in itertools.accumulate(r["tokens"] for r in records)]
        ax.plot(tokens, smooth([r["loss"] for r in records]), label=name)
        ax.axvline(seen, color="grey", lw=0.5)
        seen = tokens[-1]
    ax.set(xlabel="training tokens", ylabel="loss (10-step mean)", yscale="log", title="pre-training loss")
    ax.legend(fontsize=8)
    return _save(fig, path)


def task_loss_figure(records: list[dict], title: str, path: Path | None = None) -> Figure:
    """Per-data-type loss within one stage (each task's 10-step mean over the steps it appeared in);
    saved to ``path`` when given."""
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots()
    tasks = sorted({k[5:] for r in records for k in r if k.startswith("loss/")})
    for task in tasks:
        points = [(r["step"], r[f"loss/{task}"]) for r in records if f"loss/{task}" in r]
        ax.plot([p[0] for p in points], smooth([p[1] for p in points]), label=task)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title=title)
    ax.legend(fontsize=7, ncol=4)
    if path is not None:
        _save(fig, path)
    return fig


def morl_figure(records: list[dict], path: Path) -> Path:
    """Reward and response length per task against GRPO steps (5-step means)."""
    fig = Figure(figsize=(11, 3.5))
    axes = fig.subplots(1, 2)
    for ax, prefix, label in ((axes[0], "reward/", "reward"), (axes[1], "response_length/", "response length (tokens)")):
        for key in sorted({k for r in records for k in r if k.startswith(prefix)}):
            points = [(r["step"], r[key]) for r in records if key in r]
            ax.plot([p[0] for p in points], smooth([p[1] for p in points], 5), label=key[len(prefix):])
        ax.set(xlabel="GRPO step", ylabel=label)
        ax.legend(fontsize=7)
    fig.suptitle("MORL: per-task reward and response length")
    return _save(fig, path)


def morl_section(run_dir: Path, morl: MorlResult) -> list[str]:
    records = read_metrics(run_dir / "morl", key="reward")
    changes = morl.changes
    lines = ["## MORL: on-policy GRPO from the final checkpoint", "",
             f"`experiments/rl/{morl.config}.yaml`, {morl.steps} steps. Held-out scores of the RL tasks on the "
             "same samples before and after; change ± standard error of the paired difference, z = change / s.e.", "",
             changes_table(changes)]
    beyond = lambda sign: [c.task for c in changes if c.significant and sign * c.change > 0]  # noqa: E731
    lines += ["", f"Raised by more than 2 standard errors: {', '.join(beyond(1)) or 'none'}; "
              f"lowered by more than 2: {', '.join(beyond(-1)) or 'none'}.", ""]
    if records:
        first, last = records[: max(1, len(records) // 5)], records[-max(1, len(records) // 5):]
        mean = lambda rows: sum(r["reward"] for r in rows) / len(rows)  # noqa: E731
        morl_figure(records, run_dir / "figures" / "morl.png")
        lines += [f"Mean training reward: {mean(first):.3f} over the first fifth of the steps, "
                  f"{mean(last):.3f} over the last fifth.", "", "![morl](figures/morl.png)", ""]
        timed = [r for r in records if "seconds/update" in r]
        if timed:
            phase = lambda key: sum(r[f"seconds/{key}"] for r in timed) / len(timed)  # noqa: E731
            lines += [f"A GRPO step took {sum(map(phase, ('rollout', 'rewards', 'update'))):.2f} s on average "
                      f"(wall clock, {len(timed)} steps): rollouts {phase('rollout'):.2f} s, rewards "
                      f"{phase('rewards'):.2f} s, update {phase('update'):.2f} s.", ""]
    return lines


def _stages_section(run_dir: Path, results: list) -> list[str]:
    lines = ["## Stages", "", "| stage | what | trains (lr) | steps | tokens | minutes | last-10 loss | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for result in results:
        records = read_metrics(run_dir / result.name, key="loss")
        tokens = sum(r["tokens"] for r in records)
        minutes = sum(r["tokens"] / r["tokens_per_s"] for r in records) / 60
        tail = [r["loss"] for r in records[-10:]]
        lr = ", ".join(f"{k} {v:g}" for k, v in result.stage.lr.items())
        unit = " patches" if result.stage.objective == "scene_labels" else ""  # the vision warm-up counts image patches
        lines.append(f"| {result.name} | {result.stage.what} | {lr} | {len(records)} | {tokens:,}{unit} | {minutes:.1f} | "
                     f"{sum(tail) / max(1, len(tail)):.3f} | {tokens / max(1e-9, minutes * 60):,.0f} |")
    # the language-model stages only: the vision warm-up's loss is another objective on another scale
    loss_figure(run_dir, [r.name for r in results if r.stage.objective == "lm"], run_dir / "figures" / "loss.png")
    lines += ["", "![loss](figures/loss.png)", ""]
    for result in results[-2:]:
        records = read_metrics(run_dir / result.name, key="loss")
        if records:
            task_loss_figure(records, f"{result.name}: loss per data type", run_dir / "figures" / f"{result.name}_tasks.png")
            lines += [f"![{result.name}](figures/{result.name}_tasks.png)", ""]
    lines += ["## After each stage: its target tasks", ""]
    for result in results:
        if result.eval:
            lines += [f"**{result.name}**", "", scores_table(result.eval), ""]
    return lines


def _final_section(run_dir: Path, final_scores: list[TaskScore]) -> list[str]:
    fig = Figure(figsize=(max(4, 0.8 * len(final_scores) + 2), 3.2))
    plot_scores(final_scores, ax=fig.subplots())
    _save(fig, run_dir / "figures" / "final_scores.png")
    above = [r.task for r in final_scores if r.above_chance]
    below = [r.task for r in final_scores if not r.above_chance]
    return ["## Final model: every task, held-out", "",
            "Chance is measured: the score of the best blind answer (one held-out reference given to every sample). "
            "z: score minus chance in standard errors of the paired difference.", "",
            scores_table(final_scores), "", "![scores](figures/final_scores.png)", "",
            f"Above chance by more than 2 standard errors: {', '.join(above) or 'none'}. "
            f"Not significantly above chance: {', '.join(below) or 'none'}.", ""]


def timings_section(run_dir: Path) -> list[str]:
    """Wall-clock minutes per phase of the main job (``timings.json``, written as each phase ran)."""
    path = run_dir / TIMINGS
    if not path.exists():
        return []
    timings = json.loads(path.read_text())
    rows = [f"| {phase} | {seconds / 60:.1f} |" for phase, seconds in timings.items()]
    return ["## Wall-clock time per phase", "", "| phase | minutes |", "|---|---|", *rows,
            f"| total | {sum(timings.values()) / 60:.1f} |", ""]


def write_report(run_dir: Path, profile: str, results: list, final_scores: list[TaskScore],
                 morl: MorlResult | None = None, studies_dir: Path | None = None) -> Path:
    """``run_dir/report.md`` plus ``run_dir/figures/*.png``; ``studies_dir``: end with the studies'
    summary table read from there."""
    (run_dir / "figures").mkdir(exist_ok=True)
    lines = [f"# Pipeline report: profile `{profile}`", "",
             "Every number below was measured by this run (`metrics.jsonl`, `eval.json`, `final_eval.json`).", ""]
    lines += _stages_section(run_dir, results)
    lines += _final_section(run_dir, final_scores)
    if morl is not None:
        lines += morl_section(run_dir, morl)
    lines += timings_section(run_dir)
    if studies_dir is not None:
        lines += studies_summary(Path(studies_dir))
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


__all__ = ["TIMINGS", "loss_figure", "morl_figure", "morl_section", "task_loss_figure", "timings_section", "write_report"]
