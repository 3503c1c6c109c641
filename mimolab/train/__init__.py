"""Training: one loop for every pre-training stage (stage tables are data, see ``stage.py``)."""

from mimolab.train.loop import Trainer
from mimolab.train.stage import Stage

__all__ = ["Stage", "Trainer"]
