"""Grounding with referring expressions (one object or all objects of a kind), and counting.

Single: a target among distractors that share some of its attributes, so the expression must
name just enough of them ('circle', 'red circle', 'small circle', 'small red circle'). With
probability ``difficulty`` the scene also holds the target's minimal pairs (same colour and shape
but the other size; same size and shape but another colour), so all three attributes are needed:
'the small red circle' next to a large red circle and a small blue circle.

Multiple: 'Locate every red circle': two to four of them among other objects; the answer lists
one box per object, in reading order (top to bottom, then left to right).

Answers are Qwen2.5-VL's JSON, ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``, in absolute
pixels of the image as given (sizes are multiples of 28, so the processor keeps them unscaled);
x2, y2 exclusive. ``answer["boxes"]`` holds that list; single-object samples also carry its one
box as ``answer["bbox_2d"]`` and ``answer["label"]``.

Counting: 'How many red squares are there?' among other small objects; the answer is a number.
Difficulty in [0, 1] scales the number of objects and distractors, hard distractors and image size.
Below ``scene.EASY_BELOW`` a share of grounding samples are warm-ups: one large object alone in one
quadrant of a 112-pixel image (2x2 merged vision tokens), so the box is one of four places.
"""

from __future__ import annotations

import json
import random

from mimolab.data.world.scene import (
    COLORS,
    SHAPES,
    SIZES,
    Obj,
    Sample,
    assistant,
    canvas_side,
    easy,
    grid_for,
    place,
    plural,
    random_obj,
    render,
    scaled,
    user,
)

ATTRIBUTE_SETS = (("shape",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))
SINGLE_PROMPTS = ("Locate the {} and output its bbox coordinates in JSON format.",
                  "Find the {}. Give its bounding box as JSON.")
MULTI_PROMPTS = ("Locate every {} and output their bbox coordinates in JSON format.",
                 "Find all the {}. Give their bounding boxes as JSON.")


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


def _minimal_pairs(rng: random.Random, target: Obj) -> list[Obj]:
    """Objects that differ from the target in size alone and in colour alone."""
    other_size = next(s for s in SIZES if s != target.size)
    other_color = rng.choice([c for c in COLORS if c != target.color])
    return [random_obj(rng, shape=target.shape, color=target.color, size=other_size),
            random_obj(rng, shape=target.shape, color=other_color, size=target.size)]


def entry(obj: Obj, label: str) -> dict:
    return {"bbox_2d": list(obj.box), "label": label}


def _single(rng: random.Random, difficulty: float, side: int) -> tuple[list[Obj], list[Obj], str]:
    target = random_obj(rng)
    pairs = _minimal_pairs(rng, target) if rng.random() < difficulty else []
    distractors = [_distractor(rng, target) for _ in range(scaled(rng, difficulty, 1, 6) - 1)]
    objs = place(rng, [target] + pairs + distractors, side, side, grid=grid_for(rng, difficulty))
    target = objs[0]
    objs = [target] + [o for o in objs[1:] if o.label != target.label]  # an identical twin cannot be singled out
    return objs, [target], referring(target, objs[1:])


def _multiple(rng: random.Random, difficulty: float, side: int) -> tuple[list[Obj], list[Obj], str]:
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    wanted = [random_obj(rng, color=color, shape=shape) for _ in range(scaled(rng, difficulty, 2, 4))]
    others = [random_obj(rng) for _ in range(scaled(rng, difficulty, 1, 5))]
    objs = place(rng, wanted + [o for o in others if (o.color, o.shape) != (color, shape)], side, side,
                 grid=grid_for(rng, difficulty))
    targets = sorted((o for o in objs if (o.color, o.shape) == (color, shape)), key=lambda o: (o.box[1], o.box[0]))
    return objs, targets, f"{color} {shape}"


def _quadrant(rng: random.Random, difficulty: float, side: int) -> tuple[list[Obj], list[Obj], str]:
    objs = place(rng, [random_obj(rng, size="large")], side, side, grid=side // 2)
    return objs, objs, objs[0].shape


def grounding(rng: random.Random, difficulty: float) -> Sample:
    warm_up = easy(rng, difficulty)
    side = 112 if warm_up else canvas_side(rng, difficulty)
    multiple = not warm_up and rng.random() < 0.3
    objs, targets, phrase = (_quadrant if warm_up else _multiple if multiple else _single)(rng, difficulty, side)
    boxes = [entry(t, phrase) for t in targets]
    if multiple:
        prompt, answer = rng.choice(MULTI_PROMPTS).format(plural(phrase, 2)), {"boxes": boxes}
    else:
        prompt, answer = rng.choice(SINGLE_PROMPTS).format(phrase), {**boxes[0], "boxes": boxes}
    return Sample("grounding", [user(render(objs, side, side), prompt), assistant(json.dumps(boxes))], answer,
                  {"objects": [o.as_dict() for o in objs], "targets": [objs.index(t) for t in targets],
                   "kind": "multiple" if multiple else "single", "size": [side, side]})


def counting(rng: random.Random, difficulty: float) -> Sample:
    side = canvas_side(rng, difficulty, (112, 168))
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    n_target = rng.randint(0 if difficulty > 0.3 else 1, scaled(rng, difficulty, 2, 8))
    wanted = [random_obj(rng, color=color, shape=shape, size="small") for _ in range(n_target)]
    other = [random_obj(rng, size="small") for _ in range(scaled(rng, difficulty, 0, 6))]
    other = [o for o in other if (o.color, o.shape) != (color, shape)]
    objs = place(rng, wanted + other, side, side, grid=grid_for(rng, difficulty))
    count = sum((o.color, o.shape) == (color, shape) for o in objs)
    question = f"How many {color} {plural(shape, 2)} are there?"
    return Sample("counting", [user(render(objs, side, side), question), assistant(str(count))], {"count": count},
                  {"objects": [o.as_dict() for o in objs], "color": color, "shape": shape, "size": [side, side]})
