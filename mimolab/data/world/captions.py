"""Image captions: one to six objects (shape, colour, size, position) on a white canvas.

The caption names every object with its position (a 3x3 grid: 'top left' ... 'center'), in one of
four phrasings, so a tiny model sees the same facts said several ways, as re-captioned data does;
the fourth groups alike objects by count ('two small red circles and a large blue square').
Difficulty raises the number of objects (1 to 1 + 5 * difficulty) and the canvas size.
"""

from __future__ import annotations

import random
from collections import Counter

from mimolab.data.world.scene import (
    Obj,
    Sample,
    assistant,
    canvas_side,
    grid_for,
    join,
    place,
    plural,
    random_obj,
    render,
    scaled,
    user,
    where,
)

PROMPTS = ("Describe the image.", "What is in this picture?", "Write a short caption.")
NUMBER_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight")


def counted(objs: list[Obj]) -> str:
    """'two small red circles and a large blue square' (groups in order of first appearance)."""
    groups = Counter(o.label for o in objs)
    parts = []
    for label, n in groups.items():
        words = label.split()
        parts.append(f"{NUMBER_WORDS[n]} {' '.join(words[:-1])} {plural(words[-1], n)}")
    return join(parts)


def describe(objs: list[Obj], width: int, height: int, style: int) -> str:
    """The caption of ``objs`` in phrasing ``style`` (0 to 3)."""
    if style == 3:
        text = counted(objs)
        return text[0].upper() + text[1:] + "."
    text = join([f"a {o.label} at the {where(o, width, height)}" for o in objs])
    if style == 0:
        return text[0].upper() + text[1:] + "."
    if style == 1:
        return f"The image shows {text}."
    n = len(objs)
    return f"There {'is' if n == 1 else 'are'} {n} {plural('object', n)}: {text}."


def caption(rng: random.Random, difficulty: float) -> Sample:
    side = canvas_side(rng, difficulty)
    objs = place(rng, [random_obj(rng) for _ in range(scaled(rng, difficulty, 1, 6))], side, side,
                 grid=grid_for(rng, difficulty))
    reply = describe(objs, side, side, rng.randrange(4))
    image = render(objs, side, side)
    return Sample("caption", [user(image, rng.choice(PROMPTS)), assistant(reply)], {"text": reply},
                  {"objects": [o.as_dict() for o in objs], "size": [side, side]})
