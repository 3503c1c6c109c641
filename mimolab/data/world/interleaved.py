"""Interleaved image-text: a short 'page' whose text refers to two or three images.

The page reads "Image 1: <image> Image 1 shows a red circle. Image 2: ..." and ends with a
question that needs the text and the right image together: the shape in image k, or which image
shows a given object. Each image holds one large object, each with a different colour-shape pair.
"""

from __future__ import annotations

import random

from mimolab.data.world.scene import Obj, Sample, assistant, place, random_obj, render, user

SIZE = 112


def _distinct_objects(rng: random.Random, n: int) -> list[Obj]:
    objs: list[Obj] = []
    while len(objs) < n:
        obj = place(rng, [random_obj(rng, size="large")], SIZE, SIZE)[0]
        if all((obj.color, obj.shape) != (o.color, o.shape) for o in objs):
            objs.append(obj)
    return objs


def interleaved(rng: random.Random, difficulty: float) -> Sample:
    n_images = 2 if difficulty < 0.5 else rng.choice((2, 3))
    objs = _distinct_objects(rng, n_images)
    items: list = [rng.choice(("Here is a page from a picture book.", "Read the page and answer."))]
    for i, obj in enumerate(objs, 1):
        items += [f"Image {i}:", render([obj], SIZE, SIZE), f"Image {i} shows a {obj.color} {obj.shape}."]
    ask = rng.randrange(n_images)
    if rng.random() < 0.5:
        items.append(f"What shape is in image {ask + 1}?")
        reply, answer = f"A {objs[ask].shape}.", {"text": objs[ask].shape}
    else:
        items.append(f"Which image shows the {objs[ask].color} {objs[ask].shape}?")
        reply, answer = f"Image {ask + 1}.", {"text": str(ask + 1)}
    return Sample("interleaved", [user(*items), assistant(reply)], answer,
                  {"objects": [o.as_dict() for o in objs], "asked": ask})
