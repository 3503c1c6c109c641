"""Image perception tasks: captions, grounding (with referring expressions), counting.

Difficulty in [0, 1] scales the number of objects and distractors. Boxes are absolute pixel
coordinates of the image as given (images are multiples of 28 pixels, so the processor keeps
them at native size and the boxes need no rescaling).
"""

from __future__ import annotations

import json
import random

from mimolab.data.world.scene import COLORS, SHAPES, Obj, Sample, assistant, place, plural, random_obj, render, user, where

CAPTION_PROMPTS = ("Describe the image.", "What is in this picture?", "Write a short caption.")


def _n(rng: random.Random, difficulty: float, low: int, high: int) -> int:
    return rng.randint(low, max(low, round(low + difficulty * (high - low))))


def caption(rng: random.Random, difficulty: float) -> Sample:
    size = rng.choice((112, 168))
    objs = place(rng, [random_obj(rng) for _ in range(_n(rng, difficulty, 1, 4))], size, size)
    parts = [f"a {o.label} at the {where(o, size, size)}" for o in objs]
    text = (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])
    style = rng.randrange(3)
    if style == 0:
        reply = text[0].upper() + text[1:] + "."
    elif style == 1:
        reply = f"The image shows {text}."
    else:
        reply = f"There {'is' if len(objs) == 1 else 'are'} {len(objs)} {plural('object', len(objs))}: {text}."
    image = render(objs, size, size)
    return Sample("caption", [user(image, rng.choice(CAPTION_PROMPTS)), assistant(reply)], {"text": reply},
                  {"objects": [o.__dict__ for o in objs], "size": [size, size]})


def _referring(target: Obj, others: list[Obj]) -> str:
    """The shortest description (shape; colour + shape; size + colour + shape) no other object fits."""
    for attrs in (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape")):
        if not any(all(getattr(o, a) == getattr(target, a) for a in attrs) for o in others):
            return " ".join(getattr(target, a) for a in attrs)
    return target.label


def grounding(rng: random.Random, difficulty: float) -> Sample:
    size = rng.choice((112, 168, 224))
    n = _n(rng, difficulty, 1, 6)
    target = random_obj(rng)
    # distractors share some attributes with the target so the expression needs them
    distractors = [random_obj(rng, color=target.color if rng.random() < 0.5 else None,
                              shape=target.shape if rng.random() < 0.5 else None) for _ in range(n - 1)]
    objs = place(rng, [target] + distractors, size, size)
    target, others = objs[0], objs[1:]
    if any(o.label == target.label for o in others):  # identical twin: no expression can single it out
        others = [o for o in others if o.label != target.label]
        objs = [target] + others
    phrase = _referring(target, others)
    answer = [{"bbox_2d": list(target.box), "label": phrase}]
    image = render(objs, size, size)
    prompt = rng.choice((f"Locate the {phrase} and output its bbox coordinates in JSON format.",
                         f"Find the {phrase}. Give its bounding box as JSON."))
    return Sample("grounding", [user(image, prompt), assistant(json.dumps(answer))],
                  {"bbox_2d": list(target.box), "label": phrase},
                  {"objects": [o.__dict__ for o in objs], "target": 0, "size": [size, size]})


def counting(rng: random.Random, difficulty: float) -> Sample:
    size = rng.choice((112, 168))
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    n_target = rng.randint(0 if difficulty > 0.3 else 1, _n(rng, difficulty, 2, 7))
    n_other = _n(rng, difficulty, 0, 5)
    wanted = [random_obj(rng, color=color, shape=shape, size="small") for _ in range(n_target)]
    other = [o for o in (random_obj(rng, size="small") for _ in range(n_other)) if (o.color, o.shape) != (color, shape)]
    objs = place(rng, wanted + other, size, size)
    count = sum(1 for o in objs if (o.color, o.shape) == (color, shape))
    image = render(objs, size, size)
    question = f"How many {color} {plural(shape, 2)} are there?"
    return Sample("counting", [user(image, question), assistant(str(count))], {"count": count},
                  {"objects": [o.__dict__ for o in objs], "color": color, "shape": shape, "size": [size, size]})


def interleaved(rng: random.Random, difficulty: float) -> Sample:
    """A short 'page': text that refers to two or three pictures, then a question about one."""
    n_images = 2 if difficulty < 0.5 else rng.choice((2, 3))
    pictures, objs = [], []
    for _ in range(n_images):
        obj = place(rng, [random_obj(rng, size="large")], 112, 112)[0]
        objs.append(obj)
        pictures.append(render([obj], 112, 112))
    items: list = ["Here is a page from a picture book."]
    for i, (picture, obj) in enumerate(zip(pictures, objs), 1):
        items += [f"Picture {i}:", picture, f"Picture {i} shows a {obj.color} {obj.shape}."]
    ask = rng.randrange(n_images)
    items.append(f"What shape is in picture {ask + 1}?")
    reply = f"A {objs[ask].shape}."
    return Sample("interleaved", [user(*items), assistant(reply)], {"text": objs[ask].shape},
                  {"objects": [o.__dict__ for o in objs], "asked": ask})
