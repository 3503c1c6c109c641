"""The synthetic visual world: one generator per MiMo-VL data type.

``generate(task, index, seed, difficulty)`` is a pure function: the same arguments give the same
sample, byte for byte, so a data stream is resumable from an index and nothing needs storing.

Each generator is ``(rng: random.Random, difficulty: float) -> Sample``, with
``rng = random.Random(f"{task}/{seed}/{index}")``: no global random state anywhere. ``scene`` holds
the shapes, colours, rendering and the ``Sample`` dataclass; each module's docstring says exactly
what its difficulty changes. ``difficulty`` is in [0, 1]; 0.5 is the default, 1.0 the hard end. It is one
number, or a mapping of task to difficulty with a ``default`` for the tasks it does not name (each task's
knob): the cpu profile trains and evaluates most tasks at 0, the easy end, and the ones that would saturate
there a little higher (see experiments/pretrain/). In the scene tasks
(caption, grounding, counting) objects sit on the 28-pixel grid of merged vision tokens with
probability 1 - difficulty, so at the easy end each object fills whole tokens. Backgrounds are the
image processor's mean colour under a faint red/blue ramp that tells a patch where it is (scene.BACKGROUND
and scene.RAMP say why):

| task | module | reward needs (``answer``) | difficulty raises |
|---|---|---|---|
| caption | captions | text | objects 1-6, canvas 112-224 px |
| interleaved | interleaved | text | images per page 2-3 |
| ocr | ocr | text, boxes | words 1-3, rotation, blur, noise, canvas height, share of text spotting (warm-ups below 0.25) |
| grounding | grounding | boxes (+ bbox_2d, label for one) | distractors, minimal-pair distractors, canvas 112-224 px (warm-ups below 0.25) |
| counting | grounding | count | targets 0-8, distractors 0-6, canvas |
| chart | charts | number or text | bars/rows 3-5, the 'difference' question (warm-ups below 0.25) |
| gui | gui | action, point/text, target, bbox_2d | buttons 2-6, shuffled layout, dialogs, open menus |
| video | video | span (s), label | frames 4-12, half-second spans, a second mover |
| visual_math | reasoning | number | numbers, objects/bars/rows to read, steps (warm-ups below 0.25) |
| text_reasoning | reasoning | number | numbers, steps (warm-ups below 0.25) |
| text | reasoning | text | (none: plain sentences) |

Warm-ups (``scene.easy``): below difficulty 0.25 a share ``1 - difficulty / 0.25`` of OCR, grounding,
chart and reasoning samples are the simplest form of the task (one large clean word; one object in one of
four quadrants; the largest or smallest value of a chart; one-step single-digit arithmetic). Above 0.25
nothing changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from mimolab.data.world import captions, charts, grounding, gui, interleaved, ocr, reasoning, video
from mimolab.data.world.scene import Sample

# the modules stay reachable as attributes (mimolab.data.world.grounding is the module, not a function)
TASKS: dict[str, Callable[[random.Random, float], Sample]] = {
    "caption": captions.caption, "interleaved": interleaved.interleaved, "ocr": ocr.ocr,
    "grounding": grounding.grounding, "counting": grounding.counting, "chart": charts.chart, "gui": gui.gui,
    "video": video.video, "visual_math": reasoning.visual_math, "text_reasoning": reasoning.text_reasoning,
    "text": reasoning.text,
}


Difficulty = float | Mapping[str, float]  # one for every task, or per task with a "default"


def task_difficulty(difficulty: Difficulty, task: str) -> float:
    """The difficulty ``task`` is drawn at: the number itself, or the mapping's entry (else its ``default``)."""
    if not isinstance(difficulty, Mapping):
        return float(difficulty)
    unknown = sorted(set(difficulty) - set(TASKS) - {"default"})
    if unknown:
        raise KeyError(f"difficulty names unknown tasks {unknown}; tasks are {sorted(TASKS)} (and 'default')")
    if task not in difficulty and "default" not in difficulty:
        raise KeyError(f"difficulty has no entry for {task!r} and no 'default'")
    return float(difficulty.get(task, difficulty.get("default")))


def generate(task: str, index: int, seed: int = 0, difficulty: Difficulty = 0.5) -> Sample:
    """Sample ``index`` of ``task``: a pure function of (task, index, seed, difficulty)."""
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    difficulty = task_difficulty(difficulty, task)
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    sample = TASKS[task](random.Random(f"{task}/{seed}/{index}"), difficulty)
    sample.meta.update(index=index, seed=seed, difficulty=difficulty)
    return sample


__all__ = ["TASKS", "Difficulty", "Sample", "generate", "task_difficulty"]
