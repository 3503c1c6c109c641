"""Video: 4-8 frames at 2 FPS in which an object appears, moves left to right and leaves, while a
small distractor stays in a corner.

Temporal grounding asks when the object is visible; the answer is a span in seconds from the first
to the last frame that shows it (frame i is at i / 2 s), written "[1.0, 2.5]". A timestamped
caption variant describes the clip instead. Frame counts are even (whole temporal patches);
difficulty makes clips longer.
"""

from __future__ import annotations

import random

from mimolab.data.world.scene import Obj, Sample, assistant, draw_obj, random_obj, render, user

FPS = 2
SIZE = 112
SIDE = 32  # the mover's side in pixels


def _frames(mover: Obj, still: Obj, n_frames: int, first: int, last: int, y: int) -> list:
    """Frames with ``still`` always drawn and ``mover`` drawn (moving right) in frames first..last."""
    frames = []
    for i in range(n_frames):
        frame = render([still], SIZE, SIZE)
        if first <= i <= last:
            x = round(4 + (i - first) / max(1, last - first) * (SIZE - SIDE - 30))
            draw_obj(frame, Obj(mover.shape, mover.color, mover.size, (x, y, x + SIDE, y + SIDE)))
        frames.append(frame)
    return frames


def video(rng: random.Random, difficulty: float) -> Sample:
    n_frames = rng.choice((4, 6) if difficulty < 0.5 else (6, 8))
    first = rng.randint(0, n_frames - 2)
    last = rng.randint(first + 1, n_frames - 1)
    mover = random_obj(rng, size="large")
    still = random_obj(rng, size="small")
    while still.color == mover.color:
        still = random_obj(rng, size="small")
    still = Obj(still.shape, still.color, still.size, (SIZE - 22, SIZE - 22, SIZE - 6, SIZE - 6))
    y = rng.randint(8, SIZE - SIDE - 30)
    frames = _frames(mover, still, n_frames, first, last, y)
    span = [first / FPS, last / FPS]
    name = f"{mover.color} {mover.shape}"
    if rng.random() < 0.7:
        kind = "temporal_grounding"
        question = f"When is the {name} visible in the video? Answer with the start and end time in seconds."
        reply = f"[{span[0]:.1f}, {span[1]:.1f}]"
    else:
        kind = "timestamped_caption"
        question = "Describe the video with timestamps."
        reply = (f"From {span[0]:.1f}s to {span[1]:.1f}s a {name} moves from left to right; "
                 f"a {still.color} {still.shape} stays in the corner.")
    return Sample("video", [user(frames, question), assistant(reply)], {"span": span, "label": name},
                  {"visible_frames": list(range(first, last + 1)), "fps": FPS, "n_frames": n_frames, "kind": kind,
                   "mover": {"shape": mover.shape, "color": mover.color, "side": SIDE, "y": y}, "still": still.as_dict()})
