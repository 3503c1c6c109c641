"""The synthetic visual world: one generator per MiMo-VL data type.

``generate(task, index, seed, difficulty)`` is a pure function: the same arguments give the same
sample, byte for byte, so a data stream is resumable from an index and nothing needs storing.

Each generator is ``(rng: random.Random, difficulty: float) -> Sample``, with
``rng = random.Random(f"{task}/{seed}/{index}")``: no global random state anywhere.

Tasks (module): caption (captions), interleaved (interleaved), ocr (ocr), grounding and counting
(grounding), chart (charts: bar charts and tables), gui (gui), video (video), visual_math,
text_reasoning and text (reasoning). ``difficulty`` in [0, 1] scales objects, distractors, noise
and numbers. ``scene`` holds the shapes, colours, rendering and the ``Sample`` dataclass.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mimolab.data.world import captions, charts, grounding, gui, interleaved, ocr, reasoning, video
from mimolab.data.world.scene import Sample

# the modules stay reachable as attributes (mimolab.data.world.grounding is the module, not a function)
TASKS: dict[str, Callable[[random.Random, float], Sample]] = {
    "caption": captions.caption, "interleaved": interleaved.interleaved, "ocr": ocr.ocr,
    "grounding": grounding.grounding, "counting": grounding.counting, "chart": charts.chart, "gui": gui.gui,
    "video": video.video, "visual_math": reasoning.visual_math, "text_reasoning": reasoning.text_reasoning,
    "text": reasoning.text,
}


def generate(task: str, index: int, seed: int = 0, difficulty: float = 0.5) -> Sample:
    """Sample ``index`` of ``task``: a pure function of (task, index, seed, difficulty)."""
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    sample = TASKS[task](random.Random(f"{task}/{seed}/{index}"), difficulty)
    sample.meta.update(index=index, seed=seed, difficulty=difficulty)
    return sample


__all__ = ["TASKS", "Sample", "generate"]
