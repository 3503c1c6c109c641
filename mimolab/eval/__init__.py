"""Evaluation: per-task scores (metrics), the held-out harness with measured chance levels, and the
result types every later step reads (results).

The harness (which needs torch) loads on first use, so the metrics stay light to import (reward
workers import them in a fresh process)."""

from mimolab.eval.metrics import score

from mimolab.eval.results import PairedChange, TaskScore, changes_table, paired_change, scores_table

_HARNESS = ("HELD_OUT", "evaluate")


def __getattr__(name: str):
    if name in _HARNESS:
        from mimolab.eval import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'mimolab.eval' has no attribute {name!r}")


__all__ = [*_HARNESS, "PairedChange", "TaskScore", "changes_table", "paired_change", "score", "scores_table"]
