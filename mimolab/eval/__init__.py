"""Evaluation: per-task scores (metrics) and the held-out harness with measured chance levels.

The harness (which needs torch) loads on first use, so the metrics stay light to import (reward
workers import them in a fresh process)."""

from mimolab.eval.metrics import score

_HARNESS = ("HELD_OUT", "TaskScore", "evaluate", "markdown_table", "paired_change")


def __getattr__(name: str):
    if name in _HARNESS:
        from mimolab.eval import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'mimolab.eval' has no attribute {name!r}")


__all__ = [*_HARNESS, "score"]
