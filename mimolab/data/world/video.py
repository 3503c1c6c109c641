"""Video: frames at 2 FPS in which an object appears, moves and leaves, with a static distractor.

Temporal grounding asks when the object is visible; the answer is a span in seconds, from the
first to the last frame that shows it (frame i is at i / 2 s). A caption variant describes the
clip with timestamps.
"""

from __future__ import annotations

import random

from mimolab.data.world.scene import Obj, Sample, assistant, draw_obj, random_obj, render, user

FPS = 2
SIZE = 112


def _span(first: int, last: int) -> list[float]:
    return [first / FPS, last / FPS]


def video(rng: random.Random, difficulty: float) -> Sample:
    n_frames = 6 if difficulty < 0.5 else 8
    first = rng.randint(0, n_frames - 3)
    last = rng.randint(first + 1, n_frames - 1)
    mover = random_obj(rng, size="large")
    still = random_obj(rng, size="small")
    while (still.color, still.shape) == (mover.color, mover.shape):
        still = random_obj(rng, size="small")
    side = 32
    still = Obj(still.shape, still.color, still.size, (SIZE - 22, SIZE - 22, SIZE - 6, SIZE - 6))
    y = rng.randint(8, SIZE - side - 30)
    frames, visible = [], []
    for i in range(n_frames):
        frame = render([still], SIZE, SIZE)
        if first <= i <= last:
            progress = (i - first) / max(1, last - first)
            x = round(4 + progress * (SIZE - side - 30))
            draw_obj(frame, Obj(mover.shape, mover.color, mover.size, (x, y, x + side, y + side)))
            visible.append(i)
        frames.append(frame)
    span = _span(first, last)
    name = f"{mover.color} {mover.shape}"
    if rng.random() < 0.7:
        question = f"When is the {name} visible in the video? Answer with the start and end time in seconds."
        reply = f"[{span[0]:.1f}, {span[1]:.1f}]"
        task_kind = "temporal_grounding"
    else:
        question = "Describe the video with timestamps."
        reply = f"From {span[0]:.1f}s to {span[1]:.1f}s a {name} moves from left to right; a {still.color} {still.shape} stays in the corner."
        task_kind = "timestamped_caption"
    return Sample("video", [user(frames, question), assistant(reply)], {"span": span, "label": name},
                  {"visible_frames": visible, "fps": FPS, "kind": task_kind, "mover": mover.__dict__, "still": still.__dict__})
