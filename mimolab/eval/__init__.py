"""Evaluation: per-task scores (metrics) and the held-out harness with measured chance levels."""

from mimolab.eval.harness import HELD_OUT, TaskScore, evaluate, markdown_table
from mimolab.eval.metrics import score

__all__ = ["HELD_OUT", "TaskScore", "evaluate", "markdown_table", "score"]
