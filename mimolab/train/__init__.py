"""Training engines: the loop every pre-training stage runs (``loop.py``; stage tables are data, see
``stage.py``), the small profiles' vision warm-up, checkpoints and resume for every loop
(``checkpoints.py``), LoRA, and tracking. What runs stages in order lives in ``mimolab.pipeline``."""

from mimolab.train.loop import Trainer
from mimolab.train.stage import Stage

__all__ = ["Stage", "Trainer"]
