"""Image captions: one to four objects (shape, colour, size, position) on a white canvas.

The caption names every object with its position (a 3x3 grid: 'top left' ... 'center'), in one of
three phrasings, so a tiny model sees the same facts said several ways, as re-captioned data does.
"""

from __future__ import annotations

import random

from mimolab.data.world.scene import Obj, Sample, assistant, join, place, plural, random_obj, render, scaled, user, where

PROMPTS = ("Describe the image.", "What is in this picture?", "Write a short caption.")


def describe(objs: list[Obj], width: int, height: int, style: int) -> str:
    """The caption of ``objs`` in phrasing ``style`` (0, 1 or 2)."""
    text = join([f"a {o.label} at the {where(o, width, height)}" for o in objs])
    if style == 0:
        return text[0].upper() + text[1:] + "."
    if style == 1:
        return f"The image shows {text}."
    n = len(objs)
    return f"There {'is' if n == 1 else 'are'} {n} {plural('object', n)}: {text}."


def caption(rng: random.Random, difficulty: float) -> Sample:
    size = rng.choice((112, 168))
    objs = place(rng, [random_obj(rng) for _ in range(scaled(rng, difficulty, 1, 4))], size, size)
    reply = describe(objs, size, size, rng.randrange(3))
    image = render(objs, size, size)
    return Sample("caption", [user(image, rng.choice(PROMPTS)), assistant(reply)], {"text": reply},
                  {"objects": [o.as_dict() for o in objs], "size": [size, size]})
