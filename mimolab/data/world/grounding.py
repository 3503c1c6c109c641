"""Grounding with referring expressions, and counting.

Grounding: a target among distractors that share some of its attributes, so the expression must
name just enough of them ('circle', 'red circle', 'small circle', 'small red circle'). The answer
is Qwen2.5-VL's JSON, ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``, in absolute pixels of the
image as given (sizes are multiples of 28, so the processor keeps them unscaled); x2, y2 exclusive.

Counting: 'How many red squares are there?' among other small objects; the answer is a number.
Difficulty in [0, 1] scales the number of objects and distractors.
"""

from __future__ import annotations

import json
import random

from mimolab.data.world.scene import COLORS, SHAPES, Obj, Sample, assistant, place, plural, random_obj, render, scaled, user

ATTRIBUTE_SETS = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))


def referring(target: Obj, others: list[Obj]) -> str:
    """The shortest description (shape; colour + shape; size + shape; all three) no other object fits."""
    for attrs in ATTRIBUTE_SETS:
        if not any(all(getattr(o, a) == getattr(target, a) for a in attrs) for o in others):
            return " ".join(getattr(target, a) for a in attrs)
    return target.label


def _distractor(rng: random.Random, target: Obj) -> Obj:
    """An object that shares the target's colour and/or shape half of the time each."""
    return random_obj(rng, color=target.color if rng.random() < 0.5 else None,
                      shape=target.shape if rng.random() < 0.5 else None)


def grounding(rng: random.Random, difficulty: float) -> Sample:
    size = rng.choice((112, 168, 224))
    target = random_obj(rng)
    objs = place(rng, [target] + [_distractor(rng, target) for _ in range(scaled(rng, difficulty, 1, 6) - 1)], size, size)
    target = objs[0]
    objs = [target] + [o for o in objs[1:] if o.label != target.label]  # an identical twin cannot be singled out
    phrase = referring(target, objs[1:])
    answer = {"bbox_2d": list(target.box), "label": phrase}
    prompt = rng.choice((f"Locate the {phrase} and output its bbox coordinates in JSON format.",
                         f"Find the {phrase}. Give its bounding box as JSON."))
    return Sample("grounding", [user(render(objs, size, size), prompt), assistant(json.dumps([answer]))], answer,
                  {"objects": [o.as_dict() for o in objs], "target": 0, "size": [size, size]})


def counting(rng: random.Random, difficulty: float) -> Sample:
    size = rng.choice((112, 168))
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    n_target = rng.randint(0 if difficulty > 0.3 else 1, scaled(rng, difficulty, 2, 7))
    wanted = [random_obj(rng, color=color, shape=shape, size="small") for _ in range(n_target)]
    other = [random_obj(rng, size="small") for _ in range(scaled(rng, difficulty, 0, 5))]
    other = [o for o in other if (o.color, o.shape) != (color, shape)]
    objs = place(rng, wanted + other, size, size)
    count = sum((o.color, o.shape) == (color, shape) for o in objs)
    question = f"How many {color} {plural(shape, 2)} are there?"
    return Sample("counting", [user(render(objs, size, size), question), assistant(str(count))], {"count": count},
                  {"objects": [o.as_dict() for o in objs], "color": color, "shape": shape, "size": [size, size]})
