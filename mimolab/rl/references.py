"""The references a reward scores against, checked before any scoring, and the image frame of a box.

A reference that cannot be scored against (``count: "3"``, a box with x2 <= x1, an ``image_size`` that
is not two positive numbers) is bad data: ``check_reference`` raises ``ValueError`` naming the column,
the row and the problem, rather than let it pass as a silent 0 that looks like a wrong answer. (A
reply that cannot be read scores 0 with a reason: that is the policy's doing, not the data's.)
The reward service answers such a request with 422 and the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def shape(value: Any) -> str:
    """A value's type and the start of its repr, for error messages."""
    return f"{type(value).__name__} {repr(value)[:60]}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _box_problem(box: Any) -> str | None:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(v) for v in box)):
        return f"bbox_2d must be four numbers [x1, y1, x2, y2], got {box!r}"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"bbox_2d {list(box)} is empty or inverted (x2 <= x1 or y2 <= y1)"
    return None


def _number_problem(answer: dict, key: str, required: bool = True) -> str | None:
    if key not in answer:
        return f"'{key}' (a number) is missing" if required else None
    return None if _is_number(answer[key]) else f"'{key}' must be a number, got {answer[key]!r}"


def _text_problem(answer: dict, key: str) -> str | None:
    return None if isinstance(answer.get(key), str) else f"'{key}' must be a string, got {answer.get(key)!r}"


def _grounding_problem(answer: dict) -> str | None:
    """One box (``bbox_2d``) or several (``boxes``: ``[{"bbox_2d": ...}, ...]``), each a valid box."""
    if "bbox_2d" in answer or not isinstance(answer.get("boxes"), list) or not answer["boxes"]:
        return _box_problem(answer.get("bbox_2d"))
    for entry in answer["boxes"]:
        problem = _box_problem(entry.get("bbox_2d") if isinstance(entry, dict) else entry)
        if problem:
            return f"in 'boxes': {problem}"
    return None


def _gui_problem(answer: dict) -> str | None:
    action = answer.get("action")
    if action == "type":
        return _text_problem(answer, "text")
    if action in ("click", "ground"):
        return _box_problem(answer.get("bbox_2d")) if action == "click" else _grounding_problem(answer)
    return f"'action' must be 'click', 'type' or 'ground', got {action!r}"


def _video_problem(answer: dict) -> str | None:
    if "span" not in answer:
        return None if isinstance(answer.get("events"), list) else "'span' [start, end] or 'events' is missing"
    span = answer["span"]
    pair = isinstance(span, (list, tuple)) and len(span) == 2 and all(_is_number(v) for v in span)
    if not pair or span[1] < span[0]:
        return f"'span' must be [start, end] seconds with end >= start, got {span!r}"
    return None


REFERENCE_CHECKS: dict[str, Callable[[dict], str | None]] = {
    "visual_math": lambda a: _number_problem(a, "number", required=False),
    "text_reasoning": lambda a: _number_problem(a, "number", required=False),
    "counting": lambda a: _number_problem(a, "count"),
    "chart": lambda a: _number_problem(a, "number") if "number" in a else _text_problem(a, "text"),
    "grounding": _grounding_problem, "gui": _gui_problem, "video": _video_problem,
    "ocr": lambda a: _text_problem(a, "text"), "interleaved": lambda a: None,
}


def check_reference(task: str, answer: Any, columns: dict[str, list], row: int) -> None:
    """Raise ``ValueError`` naming the column and row when a sample's reference cannot be scored against
    (``count: "3"``, an inverted box, an image size that is not two positive numbers): bad data is an
    error to fix, not a silent zero that looks like a wrong answer."""
    check = REFERENCE_CHECKS.get(task)
    if check is None:  # no reward of mimolab's scores this task: nothing to check against
        return
    if not isinstance(answer, dict):
        raise ValueError(f"column 'answer', row {row}: expected an object, got {shape(answer)}")
    problem = check(answer)
    if problem:
        raise ValueError(f"column 'answer', row {row} (task {task!r}): {problem}")
    for key in ("image_size", "resized_size"):
        size = _cell(columns, key, row)
        if size is not None and not (isinstance(size, (list, tuple)) and len(size) == 2
                                     and all(_is_number(v) and v > 0 for v in size)):
            raise ValueError(f"column {key!r}, row {row}: must be [width, height] in pixels, got {size!r}")


def image_frame(columns: dict[str, list], row: int) -> tuple[float, float] | None:
    """The image (width, height) a box answer lies in: the ``image_size`` column, else the first image
    of the row's world sample (``samples``) or of TRL's ``image`` / ``images`` dataset column."""
    if _cell(columns, "image_size", row) is not None:
        return tuple(float(v) for v in columns["image_size"][row])
    for key, first in (("samples", lambda s: (getattr(s, "images", None) or [None])[0]),
                       ("image", lambda image: image), ("images", lambda images: (images or [None])[0])):
        image = first(_cell(columns, key, row))
        if hasattr(image, "size") and isinstance(image.size, tuple):
            return tuple(float(v) for v in image.size)
    return None


def _cell(columns: dict[str, Any], key: str, row: int) -> Any:
    column = columns.get(key)
    return column[row] if isinstance(column, list) and row < len(column) else None


__all__ = ["REFERENCE_CHECKS", "check_reference", "image_frame", "shape"]
