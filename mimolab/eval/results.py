"""The result types, from the harness to the report: a task's held-out score (``TaskScore``) and the
paired change of one task between two evaluations of the same samples (``PairedChange``), their
JSON form (written and read back here only) and their markdown tables (rendered here only).

    rows = evaluate(model, processor, ["counting"], n=200)      # list[TaskScore]
    save_scores(rows, "eval.json"); rows = load_scores("eval.json")
    change = paired_change(before[0], after[0])                   # PairedChange
    print(scores_table(rows)); print(changes_table([change]))
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _z(diff: float, stderr: float) -> float:
    if stderr > 0:
        return diff / stderr
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def _from_dict(cls: type, record: dict):
    """A dataclass from its JSON record; keys it does not have (``z``, derived) are dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class TaskScore:
    task: str
    metric: str
    score: float  # mean over held-out samples
    stderr: float  # standard error (the harness's: of the score minus chance, paired by sample)
    chance: float  # the best blind answer's score (see mimolab.eval.harness)
    n: int
    per_sample: list[float] = field(default_factory=list, repr=False)  # held-out index order: pairs two runs
    mode: str = "think"  # "think" or "no_think" (an empty think block pre-filled)
    decoding: str = "greedy"  # or "T0.6 p0.95 avg@4" for text-only tasks
    response_tokens: float | None = None  # mean length of the replies scored, in tokens (None: not measured)

    @property
    def z(self) -> float:
        """How many standard errors the score sits above chance (paired by sample)."""
        return _z(self.score - self.chance, self.stderr)

    @property
    def above_chance(self) -> bool:
        return self.z > 2

    def as_dict(self) -> dict:
        return {**asdict(self), "z": round(self.z, 2) if math.isfinite(self.z) else None}

    @classmethod
    def from_dict(cls, record: dict) -> TaskScore:
        return _from_dict(cls, record)


@dataclass
class PairedChange:
    """One task's score after minus before, on the same held-out samples."""

    task: str
    metric: str
    decoding: str
    before: float
    after: float
    change: float  # mean of the per-sample differences
    stderr: float  # its standard error
    n: int

    @property
    def z(self) -> float:
        return _z(self.change, self.stderr)

    @property
    def significant(self) -> bool:
        """Beyond 2 standard errors either way (a change with no spread at all: any non-zero change)."""
        return abs(self.change) > 2 * self.stderr

    def as_dict(self) -> dict:
        return {**asdict(self), "z": round(self.z, 2) if math.isfinite(self.z) else None}

    @classmethod
    def from_dict(cls, record: dict) -> PairedChange:
        return _from_dict(cls, record)


def paired_change(before: TaskScore, after: TaskScore) -> PairedChange:
    """The change of one task's score between two evaluations of the same held-out samples."""
    if before.task != after.task or len(before.per_sample) != len(after.per_sample) or not before.per_sample:
        raise ValueError("paired_change needs two evaluations of the same task on the same samples (per_sample)")
    if before.decoding != after.decoding:
        raise ValueError(f"paired_change: {before.task} was decoded {before.decoding!r} before "
                         f"and {after.decoding!r} after; evaluate both the same way")
    change, stderr = mean_stderr([b - a for a, b in zip(before.per_sample, after.per_sample)])
    return PairedChange(before.task, before.metric, before.decoding, before.score, after.score, change, stderr, before.n)


def save_scores(rows: list[TaskScore], path: str | Path) -> Path:
    """``rows`` as a JSON list (per-sample scores included), written whole then renamed into place."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    tmp.replace(path)
    return path


def load_scores(path: str | Path) -> list[TaskScore]:
    """What ``save_scores`` wrote; an empty list when the file does not exist."""
    path = Path(path)
    return [TaskScore.from_dict(r) for r in json.loads(path.read_text())] if path.exists() else []


def _z_cell(z: float) -> str:
    return f"{z:.2f}" if math.isfinite(z) else ("inf" if z > 0 else "-inf" if z < 0 else "0")


def scores_table(rows: list[TaskScore]) -> str:
    """Markdown: task, metric, decoding, score ± s.e., chance, z above chance, n."""
    lines = ["| task | metric | decoding | score ± s.e. | chance | z above chance | n |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.task} | {r.metric} | {r.decoding} | {r.score:.2f} ± {r.stderr:.2f} | {r.chance:.2f} | "
              f"{_z_cell(r.z)} | {r.n} |" for r in rows]
    return "\n".join(lines)


def changes_table(changes: list[PairedChange]) -> str:
    """Markdown: task, metric, decoding, before, after, change ± s.e., z, n."""
    lines = ["| task | metric | decoding | before | after | change ± s.e. | z | n |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.task} | {c.metric} | {c.decoding} | {c.before:.3f} | {c.after:.3f} | {c.change:+.3f} ± "
              f"{c.stderr:.3f} | {_z_cell(c.z)} | {c.n} |" for c in changes]
    return "\n".join(lines)


__all__ = ["PairedChange", "TaskScore", "changes_table", "load_scores", "mean_stderr", "paired_change", "save_scores",
           "scores_table"]
