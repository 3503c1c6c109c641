"""Video: 4-12 frames at 2 FPS in which objects appear, cross the picture and leave, while a small
distractor stays in a corner.

Time: frame i is shown at i / 2 s and lasts half a second, so an object drawn in frames first..last
is visible over the span ``[first / 2, (last + 1) / 2]`` seconds. Two frames make one temporal
patch of the vision encoder (one second); below difficulty 0.5 spans start and end on whole
seconds (patch boundaries), above it on any half second.

Questions: temporal grounding, 'When is the red circle visible?', answered in seconds ``[1.0, 3.0]``
or, when the prompt asks for it, as ``[mm:ss, mm:ss]`` (``[00:01, 00:03]``, half seconds as
``00:02.5``); or a caption with timestamps that lists every event in order of its start. ``answer``
holds the span (seconds) and the label; ``mimolab.eval.answers.parse_span`` (the evaluation's and the
rewards' reader) reads either written form back.

Difficulty in [0, 1] scales the number of frames (4 to 12, always even: whole temporal patches),
the span resolution, and adds a second moving object (probability difficulty / 2) in its own lane.
"""

from __future__ import annotations

import random

from mimolab.data.world.scene import COLORS, Obj, Sample, assistant, draw_obj, random_obj, render, scaled, user

FPS = 2
SIZE = 112
SIDE = 32  # a mover's side in pixels
X_RANGE = (4, SIZE - SIDE - 30)  # movers stay left of the still object's corner
LANES = ((4, 14), (50, 58))  # top and bottom rows for two movers, so they never overlap


def clock(seconds: float) -> str:
    """'mm:ss' ('00:03'), or 'mm:ss.s' ('00:02.5') for a half second."""
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes):02d}:{int(rest):02d}" if rest == int(rest) else f"{int(minutes):02d}:{rest:04.1f}"


def format_span(span: list[float], style: str = "seconds") -> str:
    """'[1.0, 3.0]' (style 'seconds') or '[00:01, 00:03]' (style 'clock')."""
    if style == "clock":
        return f"[{clock(span[0])}, {clock(span[1])}]"
    return f"[{span[0]:.1f}, {span[1]:.1f}]"


def _visible_frames(rng: random.Random, n_frames: int, whole_seconds: bool) -> tuple[int, int]:
    """(first, last) frame of a mover; on whole seconds the first is even and the last odd."""
    if whole_seconds:
        start = rng.randrange(0, n_frames // 2)
        end = rng.randint(start + 1, n_frames // 2)
        return 2 * start, 2 * end - 1
    first = rng.randint(0, n_frames - 2)
    return first, rng.randint(first + 1, n_frames - 1)


def _mover_box(mover: dict, frame: int) -> list[int]:
    """Where ``mover`` is in ``frame``: it crosses X_RANGE in its direction over its visible frames."""
    first, last = mover["frames"]
    progress = (frame - first) / max(1, last - first)
    if mover["direction"] == "right to left":
        progress = 1 - progress
    x = round(X_RANGE[0] + progress * (X_RANGE[1] - X_RANGE[0]))
    return [x, mover["y"], x + SIDE, mover["y"] + SIDE]


def _render_frames(movers: list[dict], still: Obj, n_frames: int) -> list:
    frames = []
    for i in range(n_frames):
        frame = render([still], SIZE, SIZE)
        for mover in movers:
            if mover["frames"][0] <= i <= mover["frames"][1]:
                draw_obj(frame, Obj(mover["shape"], mover["color"], "large", tuple(_mover_box(mover, i))))
        frames.append(frame)
    return frames


def _movers(rng: random.Random, difficulty: float, n_frames: int, whole_seconds: bool) -> list[dict]:
    n_movers = 2 if rng.random() < difficulty / 2 else 1
    colors = rng.sample(list(COLORS), n_movers)
    lanes = rng.sample(LANES, 2) if n_movers == 2 else [(LANES[0][0], LANES[1][1])]
    movers = []
    for color, lane in zip(colors, lanes):
        first, last = _visible_frames(rng, n_frames, whole_seconds)
        obj = random_obj(rng, color=color, size="large")
        movers.append({"shape": obj.shape, "color": color, "label": f"{color} {obj.shape}", "frames": [first, last],
                       "span": [first / FPS, (last + 1) / FPS], "y": rng.randint(*lane),
                       "direction": rng.choice(("left to right", "right to left"))})
    return movers


def _caption(movers: list[dict], still: Obj) -> str:
    events = [f"From {clock(m['span'][0])} to {clock(m['span'][1])} a {m['label']} moves "
              f"from {m['direction']}." for m in sorted(movers, key=lambda m: m["span"])]
    return " ".join(events) + f" A {still.color} {still.shape} stays in the corner."


def video(rng: random.Random, difficulty: float) -> Sample:
    n_frames = 2 * scaled(rng, difficulty, 2, 6)
    whole_seconds = difficulty <= 0.5 or rng.random() < 0.5
    movers = _movers(rng, difficulty, n_frames, whole_seconds)
    free_colors = [c for c in COLORS if c not in {m["color"] for m in movers}]
    still = random_obj(rng, color=rng.choice(free_colors), size="small")
    still = Obj(still.shape, still.color, still.size, (SIZE - 22, SIZE - 22, SIZE - 6, SIZE - 6))
    frames = _render_frames(movers, still, n_frames)
    asked = rng.choice(movers)
    kind = rng.choices(("seconds", "clock", "caption"), weights=(0.45, 0.3, 0.25))[0]
    if kind == "seconds":
        question = f"When is the {asked['label']} visible in the video? Answer with the start and end time in seconds."
    elif kind == "clock":
        question = f"When does the {asked['label']} appear in the video? Answer as [mm:ss, mm:ss]."
    else:
        question = "Describe the video with timestamps."
    reply = _caption(movers, still) if kind == "caption" else format_span(asked["span"], kind)
    answer = {"span": asked["span"], "label": asked["label"]}
    if kind == "caption":
        answer = {"text": reply, "events": [{"span": m["span"], "label": m["label"]} for m in movers]}
    # each mover's box in every frame it is drawn in (keys are frame numbers as strings: JSON-plain)
    tracks = [{**m, "boxes": {str(i): _mover_box(m, i) for i in range(m["frames"][0], m["frames"][1] + 1)}}
              for m in movers]
    return Sample("video", [user(frames, question), assistant(reply)], answer,
                  {"kind": kind, "fps": FPS, "n_frames": n_frames, "movers": tracks, "still": still.as_dict()})
