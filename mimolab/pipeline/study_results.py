"""What a study's runs say: per-arm means over seeds, the test between arms (Welch's, or paired by seed), the results files
(``<study>.json``, ``.md``, ``.png``) and the pipeline report's summary of every study.

A run's curve is a list of records, one per measurement: ``{"step" or "tokens", "rollouts",
"score/<task>": ..., ...}``; ``runs[arm][seed]`` is that list. The tests use each seed's last
measured score; p >= 0.05 is reported as not significant.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure

from mimolab.settings import RESULTS_DIR

Runs = dict[str, dict[int, list[dict]]]  # arm -> seed -> curve
STUDIES = {"long_cot": "notebook 09", "grpo_modes": "notebook 10", "interference": "notebook 11"}


def welch(a: list[float], b: list[float]) -> dict[str, float | None]:
    """Difference of means (b - a) with Welch's t, its two-sided p, the Welch-Satterthwaite degrees of
    freedom and the 95% confidence interval of the difference (None when either arm has no spread)."""
    from scipy import stats

    diff = sum(b) / len(b) - sum(a) / len(a)
    if len(a) < 2 or len(b) < 2 or (max(a) == min(a) and max(b) == min(b)):
        return {"diff": diff, "t": None, "p": None, "df": None, "ci_low": None, "ci_high": None}
    result = stats.ttest_ind(b, a, equal_var=False)
    ci = result.confidence_interval(0.95)
    return {"diff": diff, "t": float(result.statistic), "p": float(result.pvalue), "df": float(result.df),
            "ci_low": float(ci.low), "ci_high": float(ci.high)}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, float | None]:
    """Difference (b - a) paired by seed, over the seeds both arms have: the mean difference, the paired t with
    n - 1 degrees of freedom, its two-sided p and 95% CI (None without spread), the pairs, the spread of the
    differences (``sd_diff``) and Welch's p of the same numbers taken as independent arms (``welch_p``)."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [b[s] - a[s] for s in seeds]
    out = {"diff": sum(diffs) / len(diffs) if diffs else float("nan"), "pairs": len(diffs),
           "sd_diff": mean_sd(diffs)[1] if diffs else None, "welch_p": welch(list(a.values()), list(b.values()))["p"]}
    if len(diffs) < 2 or max(diffs) - min(diffs) < 1e-12:  # the same difference at every seed (to float error)
        return {**out, "t": None, "p": None, "df": None, "ci_low": None, "ci_high": None}
    result = stats.ttest_rel([b[s] for s in seeds], [a[s] for s in seeds])
    ci = result.confidence_interval(0.95)
    return {**out, "t": float(result.statistic), "p": float(result.pvalue), "df": float(result.df),
            "ci_low": float(ci.low), "ci_high": float(ci.high)}


def min_detectable_effect_paired(sd_diff: float, pairs: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference the paired t test at ``alpha`` detects with probability ``power``, for
    per-seed differences that spread ``sd_diff`` over ``pairs`` seeds (t quantiles at pairs - 1 degrees of freedom)."""
    from scipy import stats

    df = max(1, pairs - 1)
    return (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd_diff / math.sqrt(pairs)


def min_detectable_effect(sd_a: float, sd_b: float, seeds_a: int, seeds_b: int, *, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """The smallest true difference Welch's two-sided test at ``alpha`` detects with probability ``power``,
    for arms whose final scores spread ``sd_a``, ``sd_b`` over ``seeds_a``, ``seeds_b`` seeds (normal
    approximation with the t quantiles at the Welch-Satterthwaite degrees of freedom)."""
    from scipy import stats

    va, vb = sd_a**2 / seeds_a, sd_b**2 / seeds_b
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0
    df = (va + vb) ** 2 / (va**2 / max(1, seeds_a - 1) + vb**2 / max(1, seeds_b - 1))
    return (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se


def seeds_needed(sd: float, effect: float = 0.10, *, most: int = 20, **kwargs) -> int | None:
    """Seeds per arm (two arms of spread ``sd``) for a minimum detectable effect of ``effect``; None
    when even ``most`` seeds are not enough."""
    for seeds in range(2, most + 1):
        if min_detectable_effect(sd, sd, seeds, seeds, **kwargs) <= effect:
            return seeds
    return None


def mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))


def final_scores(runs: Runs, task: str, key: str | None = None) -> dict[str, list[float]]:
    """Per arm, each seed's last measured held-out score on ``task`` (or its last value of ``key``)."""
    return {arm: list(values.values()) for arm, values in final_by_seed(runs, task, key).items()}


def final_by_seed(runs: Runs, task: str, key: str | None = None) -> dict[str, dict[int, float]]:
    """Per arm and seed, the last measured held-out score on ``task`` (or the last value of ``key``)."""
    key = key or f"score/{task}"
    return {arm: {seed: curve[-1][key] for seed, curve in seeds.items() if curve[-1].get(key) is not None}
            for arm, seeds in runs.items()}


def claim_verdict(low: float | None, high: float | None, agrees_above: float | None = None,
                  agrees_below: float | None = None, disagrees_above: float | None = None,
                  disagrees_below: float | None = None) -> str:
    """'agrees' / 'disagrees' / 'cannot tell' from a 95% CI [low, high]: the claim agrees when the whole
    interval lies above ``agrees_above`` (or below ``agrees_below``), disagrees when it lies above
    ``disagrees_above`` (or below ``disagrees_below``); no interval (no spread): cannot tell."""
    if low is None or high is None:
        return "cannot tell"
    if (agrees_above is not None and low > agrees_above) or (agrees_below is not None and high < agrees_below):
        return "agrees"
    if (disagrees_above is not None and low > disagrees_above) or \
            (disagrees_below is not None and high < disagrees_below):
        return "disagrees"
    return "cannot tell"


def mean_ci(values: list[float]) -> dict[str, float | None]:
    """Mean of per-seed values with its 95% t interval (None bounds with fewer than two or no spread)."""
    from scipy import stats

    mean, sd = mean_sd(values)
    if len(values) < 2 or sd == 0:
        return {"diff": mean, "ci_low": None, "ci_high": None}
    half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    return {"diff": mean, "ci_low": mean - half, "ci_high": mean + half}


def summarise(runs: Runs, tasks: list[str], comparisons: list[tuple[str, str]], test: str = "welch") -> dict:
    """Mean ± sd over seeds per arm and task, and for each (baseline, other) pair the ``test`` ("welch", or
    "paired" by seed) with the 95% CI of the difference and the minimum detectable effect at the spread the
    seeds showed (of the scores, or of the per-seed differences)."""
    table, tests = [], []
    for task in tasks:
        finals = final_by_seed(runs, task)
        for arm, by_seed in finals.items():
            if by_seed:
                mean, sd = mean_sd(list(by_seed.values()))
                table.append({"task": task, "arm": arm, "mean": mean, "sd": sd, "seeds": len(by_seed)})
        for base, other in comparisons:
            a, b = finals.get(base), finals.get(other)
            if not (a and b):
                continue
            if test == "paired":
                result = paired(a, b)
                mde = min_detectable_effect_paired(result["sd_diff"], result["pairs"]) if result["pairs"] > 1 else None
            else:
                a, b = list(a.values()), list(b.values())
                result = welch(a, b)
                mde = min_detectable_effect(mean_sd(a)[1], mean_sd(b)[1], len(a), len(b)) if len(a) > 1 < len(b) else None
            tests.append({"task": task, "baseline": base, "arm": other, "test": test, **result, "mde": mde})
    return {"table": table, "tests": tests}


def _test_label(test: dict) -> str:
    return "paired t" if test.get("test") == "paired" else "Welch"


def verdict(test: dict) -> str:
    if test["p"] is None:
        return "no spread across seeds: no test"
    word = "higher" if test["diff"] > 0 else "lower"
    what = f"{word} by {abs(test['diff']):.3f}"
    if round(test["diff"], 3) == 0:  # a float difference of ~1e-17 would read "lower by 0.000"
        what = "the same to 3 decimals"
    if test["p"] < 0.05:
        return f"{what} ({_test_label(test)} p = {test['p']:.3f}): significant"
    reading = f"{what} ({_test_label(test)} p = {test['p']:.2f}): not significant"
    mde = test.get("mde")
    if mde is not None:  # a null is only informative when the study could have seen an effect
        reading += f"; it could detect {mde:.2f}" if mde <= 0.10 else f"; underpowered: it could only detect {mde:.2f}"
    return reading


def ci_cell(test: dict) -> str:
    return "-" if test.get("ci_low") is None else f"{test['ci_low']:+.3f} to {test['ci_high']:+.3f}"


def mde_cell(test: dict) -> str:
    return "-" if test.get("mde") is None else f"{test['mde']:.3f}"


def _chance(result: dict, task: str) -> str:
    """The task's chance level as a table cell ('-' in results written before chance was recorded)."""
    chance = result.get("chance", {})
    return f"{chance[task]:.3f}" if task in chance else "-"


def markdown(name: str, result: dict) -> str:
    lines = [f"# Study `{name}` (profile `{result['profile']}`)", "", result.get("what", ""), "",
             "| task | arm | final score (mean ± sd over seeds) | chance | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['arm']} | {r['mean']:.3f} ± {r['sd']:.3f} | {_chance(result, r['task'])} | "
              f"{r['seeds']} |" for r in result["table"]]
    lines += ["", "| task | arm vs baseline | difference | 95% CI | test | t | p | MDE (80% power) | reading |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in result["tests"]:
        tt = "-" if t["t"] is None else f"{t['t']:.2f}"
        p = "-" if t["p"] is None else f"{t['p']:.3f}"
        name = _test_label(t) + (f" ({t['pairs']} seeds; Welch p {t['welch_p']:.3f})" if t.get("welch_p") is not None else "")
        lines.append(f"| {t['task']} | {t['arm']} vs {t['baseline']} | {t['diff']:+.3f} | {ci_cell(t)} | {name} | {tt} | "
                     f"{p} | {mde_cell(t)} | {verdict(t)} |")
    lines += table_section("Headroom: the start checkpoint and chance on every measured task", result.get("headroom"))
    lines += table_section("Interference: mixed - single (Welch over seeds)", [
        {"task": r["task"], "single arm": r["single"], "of": r["what"], "mixed - single": r["diff"],
         "95% CI": ci_cell(r), "p": r["p"], "reading": verdict(r)} for r in result.get("interference", [])])
    lines += table_section("The report's claims against the measured numbers", [
        {**{k: v for k, v in c.items() if k not in ("ci", "ci_low", "ci_high")},
         "95% CI": ci_cell({"ci_low": (c.get("ci") or [None])[0], "ci_high": (c.get("ci") or [None, None])[1]})}
        for c in result.get("claims", [])])
    if result.get("pilot"):
        lines += ["", "Pilot (before the runs, chose seeds and n): " + json.dumps(result["pilot"])]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:+.3f}" if value < 0 else f"{value:.3f}"
    return "-" if value is None else str(value)


def table_section(title: str, rows: list[dict] | None) -> list[str]:
    """A markdown table of ``rows`` (columns: the union of their keys, in order) under ``title``."""
    if not rows:
        return []
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return ["", f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows)]


def curves_figure(runs: Runs, tasks: list[str], x: str, path: Path, title: str,
                  chance: dict[str, float] | None = None) -> Path:
    """Held-out score against ``x`` per arm, mean and band over seeds; chance as a dashed line."""
    import matplotlib.ticker
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame([{"arm": arm, "seed": seed, x: r[x], "task": task, "score": r[f"score/{task}"]}
                          for arm, seeds in runs.items() for seed, curve in seeds.items() for r in curve
                          for task in tasks if f"score/{task}" in r])
    fig = Figure(figsize=(3.6 * len(tasks), 3.2))  # no pyplot: a library leaves no figure open
    axes = fig.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = frame[frame["task"] == task] if len(frame) else frame
        if len(part):
            sns.lineplot(part, x=x, y="score", hue="arm", errorbar="sd", marker="o", ax=ax)
        if chance and task in chance:
            ax.axhline(chance[task], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set(title=task, ylim=(0, 1))
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())  # 400k, not 400000
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def headroom(runs: Runs, tasks: list[str], chance: dict[str, float], margin: float = 0.10) -> list[dict]:
    """Per task: the start checkpoint's score (every curve's first point: the same checkpoint, the same
    held-out samples), chance, and each arm's final mean minus chance with whether it is >= ``margin``."""
    rows = []
    for task in tasks:
        starts = [c[0][f"score/{task}"] for seeds in runs.values() for c in seeds.values() if f"score/{task}" in c[0]]
        row = {"task": task, "start": sum(starts) / len(starts) if starts else None, "chance": chance.get(task)}
        for arm, values in final_scores(runs, task).items():
            if values and task in chance:
                row[f"{arm} - chance"] = mean_sd(values)[0] - chance[task]
        row["every arm >= chance + margin"] = all(v >= margin for k, v in row.items() if k.endswith(" - chance"))
        rows.append(row)
    return rows


def training_figure(runs: Runs, path: Path, title: str) -> Path | None:
    """GRPO studies: training reward and response length per task, entropy, KL to the start and clip
    fraction, against rollouts, per arm (mean and band over seeds), from the ``train/`` entries of each
    curve (the means over the steps between measurements). None when no curve has any."""
    import pandas as pd
    import seaborn as sns

    rows = [{"arm": arm, "seed": seed, "rollouts": r["rollouts"], "key": k.removeprefix("train/"), "value": v}
            for arm, seeds in runs.items() for seed, curve in seeds.items() for r in curve
            for k, v in r.items() if k.startswith("train/") and v is not None]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    tasks = sorted({k.split("/", 1)[1] for k in frame["key"] if k.startswith("reward/")})
    panels = [f"reward/{t}" for t in tasks] + [f"response_length/{t}" for t in tasks]
    panels += [k for k in ("entropy", "kl_ref", "clip_fraction") if k in set(frame["key"])]
    cols = max(len(tasks), 3)
    palette = dict(zip(runs, sns.color_palette(n_colors=len(runs))))  # one colour per arm in every panel
    fig = Figure(figsize=(3.4 * cols, 2.9 * 3))
    axes = fig.subplots(3, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    slots = [(0, i) for i in range(len(tasks))] + [(1, i) for i in range(len(tasks))] + [(2, i) for i in range(3)]
    for (row, col), key in zip(slots, panels):
        ax = axes[row][col]
        ax.set_visible(True)
        sns.lineplot(frame[frame["key"] == key], x="rollouts", y="value", hue="arm", errorbar="sd", marker="o", ax=ax,
                     palette=palette, hue_order=list(palette), legend=key == "entropy")  # every arm logs entropy
        ax.set(title=key.replace("kl_ref", "KL to the start"), ylabel="")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_study(name: str, result: dict, runs: Runs, tasks: list[str], x: str, out: Path = RESULTS_DIR) -> dict[str, Path]:
    """``out/<name>.json`` (the result and every run's curve), ``.md`` and ``.png``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "png": out / f"{name}.png"}
    paths["json"].write_text(json.dumps({**result, "runs": {a: {str(s): c for s, c in v.items()} for a, v in runs.items()}},
                                        indent=2))
    paths["md"].write_text(markdown(name, result) + f"\n![{name}]({name}.png)\n")
    curves_figure(runs, tasks, x, paths["png"], f"{name}: held-out score ({result['profile']})", result.get("chance"))
    return paths


def studies_summary(results_dir: Path = RESULTS_DIR) -> list[str]:
    """Markdown lines for the pipeline report: every comparison of every study with results in
    ``results_dir`` (with the profile they were run at), and the command for those not yet run."""
    lines = ["## Studies", "", "From `experiments/results/<study>.json` (written by the study notebooks or "
             "`mimolab study NAME`); mean over seeds; each study's test across seeds (Welch, or paired by seed where "
             "an arm's seed sees the same problems as the other's).", "",
             "| study | profile | task | arm vs baseline | arm | baseline | chance | difference | 95% CI | p | MDE | reading |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    missing = []
    for name, notebook in STUDIES.items():
        path = results_dir / f"{name}.json"
        if not path.exists():
            missing.append(f"`{name}` ({notebook}; `mimolab study {name} --profile cpu`)")
            continue
        result = json.loads(path.read_text())
        means = {(r["task"], r["arm"]): r["mean"] for r in result["table"]}
        for t in result["tests"]:
            p = "-" if t["p"] is None else f"{t['p']:.3f}"
            lines.append(f"| {name} | {result['profile']} | {t['task']} | {t['arm']} vs {t['baseline']} | "
                         f"{means[t['task'], t['arm']]:.2f} | {means[t['task'], t['baseline']]:.2f} | "
                         f"{_chance(result, t['task'])} | "
                         f"{t['diff']:+.3f} | {ci_cell(t)} | {p} | {mde_cell(t)} | {verdict(t)} |")
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    return lines + [""]


__all__ = ["STUDIES", "claim_verdict", "final_by_seed", "final_scores", "headroom", "markdown", "mean_ci", "mean_sd",
           "min_detectable_effect", "min_detectable_effect_paired", "paired", "seeds_needed", "studies_summary", "summarise", "table_section", "training_figure",
           "verdict", "welch", "write_study"]
