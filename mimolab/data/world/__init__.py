"""The synthetic visual world: one generator per MiMo-VL data type.

``generate(task, index, seed, difficulty)`` is a pure function: the same arguments give the same
sample, byte for byte, so a data stream is resumable from an index and nothing needs storing.

Tasks: caption, interleaved, ocr, grounding, counting, chart, gui, video, visual_math,
text_reasoning, text. ``difficulty`` in [0, 1] scales objects, distractors, noise and numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mimolab.data.world.documents import chart, gui, ocr
from mimolab.data.world.perception import caption, counting, grounding, interleaved
from mimolab.data.world.reasoning import text, text_reasoning, visual_math
from mimolab.data.world.scene import Sample
from mimolab.data.world.video import video

TASKS: dict[str, Callable[[random.Random, float], Sample]] = {
    "caption": caption, "interleaved": interleaved, "ocr": ocr, "grounding": grounding, "counting": counting,
    "chart": chart, "gui": gui, "video": video, "visual_math": visual_math, "text_reasoning": text_reasoning,
    "text": text,
}


def generate(task: str, index: int, seed: int = 0, difficulty: float = 0.5) -> Sample:
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    sample = TASKS[task](random.Random(f"{task}/{seed}/{index}"), difficulty)
    sample.meta.update(index=index, seed=seed, difficulty=difficulty)
    return sample


__all__ = ["TASKS", "Sample", "generate"]
