"""Rendering primitives of the synthetic world: objects with shape, colour, size and position,
placed without overlap on a plain background, plus the ``Sample`` every generator returns.

Colours are flat and saturated and the background is white, so tests can check what was drawn
pixel by pixel. Every random choice goes through the ``random.Random`` a generator passes in.
Text uses Pillow's built-in scalable font; OCR also draws with system DejaVu fonts when they are
installed and falls back to the built-in one when not (same random choices, other pixels).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220), "yellow": (230, 190, 20),
          "purple": (140, 60, 170), "orange": (245, 130, 30)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (14, 20), "large": (30, 40)}  # side length range in pixels
# The background is the image processor's mean colour (OpenAI CLIP's, which Qwen2.5-VL normalises
# with), so an empty patch normalises to ~0. A white one normalises to +1.9 in every channel: a large
# constant that a ViT trained from scratch passes on to every image token, drowning the few tokens
# that hold objects (measured: image features grew 30x while their variation across images fell to
# 0.4% of their size, and captions stopped depending on the image at all).
BACKGROUND = (123, 117, 104)
# Every canvas is BACKGROUND plus a faint ramp: red rises by RAMP levels from left to right, blue from top to
# bottom, as light and colour drift across a photograph. It is the only thing that tells a patch where it is: the
# ViT sees positions through 2D RoPE, which is relative, so on a uniform background the features of an object are
# the same wherever it sits, and the language model's M-RoPE turns the width axis by 2.4e-4 rad per token. Measured
# (benchmarks/probe_image_use.py, probe_learnability.py, grounding alone from stage 2 at difficulty 0, 600 steps):
# a linear probe read a warm-up's quadrant at 0.25 (chance) and grounding scored 0.25 on a uniform background;
# with the ramp grounding scored 1.00 (chance 0.33).
RAMP = 80


@dataclass
class Obj:
    shape: str
    color: str
    size: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels (x2, y2 exclusive)

    @property
    def label(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def center(self) -> tuple[int, int]:
        return (self.box[0] + self.box[2]) // 2, (self.box[1] + self.box[3]) // 2

    def as_dict(self) -> dict[str, Any]:
        """JSON-native form (box as a list), so a record survives a JSONL round trip unchanged."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "box": list(self.box)}


@dataclass
class Sample:
    """One example: a chat (images as PIL, videos as frame lists), the reference answer its reward
    needs, and whatever else a test or an evaluation may want."""

    task: str
    messages: list[dict]  # chat turns; image items hold a PIL image, video items a list of frames
    answer: dict[str, Any]  # the reference a reward checks: count, bbox_2d/boxes, span, number, action, text
    meta: dict[str, Any] = field(default_factory=dict)  # what was drawn, for tests and analysis (JSON-plain)

    def _items(self, kind: str) -> list:
        return [item[kind] for message in self.messages if isinstance(message["content"], list)
                for item in message["content"] if item.get("type") == kind]

    @property
    def images(self) -> list[Image.Image]:
        return self._items("image")

    @property
    def videos(self) -> list[list[Image.Image]]:
        return self._items("video")

    @property
    def prompt(self) -> str:
        """The user turn's text items, joined by newlines."""
        return "\n".join(item["text"] for item in self.messages[0]["content"] if item.get("type") == "text")

    @property
    def reply(self) -> str:
        """The assistant's text (the training target)."""
        return "".join(item["text"] for item in self.messages[-1]["content"] if item.get("type") == "text")


def user(*items: Any) -> dict:
    """A user turn from strings (text) and PIL images / frame lists (image / video)."""
    content = []
    for item in items:
        if isinstance(item, str):
            content.append({"type": "text", "text": item})
        elif isinstance(item, list):
            content.append({"type": "video", "video": item, "fps": 2})
        else:
            content.append({"type": "image", "image": item})
    return {"role": "user", "content": content}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def canvas(width: int, height: int) -> Image.Image:
    """An empty image: BACKGROUND tilted by a faint colour ramp, red across and blue down (``RAMP``)."""
    return _ramp(width, height).copy()


@lru_cache(maxsize=64)
def _ramp(width: int, height: int) -> Image.Image:
    x = np.linspace(-0.5, 0.5, width)[None, :].repeat(height, 0)
    y = np.linspace(-0.5, 0.5, height)[:, None].repeat(width, 1)
    rgb = np.stack([BACKGROUND[0] + RAMP * x, np.full_like(x, BACKGROUND[1]), BACKGROUND[2] + RAMP * y], -1)
    return Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8))


def draw_obj(image: Image.Image, obj: Obj) -> None:
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = obj.box
    fill = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
    else:
        draw.polygon([(x1, y2 - 1), ((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1)], fill=fill)


def random_obj(rng: random.Random, *, shape: str | None = None, color: str | None = None,
               size: str | None = None) -> Obj:
    size = size or rng.choice(list(SIZES))
    return Obj(shape or rng.choice(SHAPES), color or rng.choice(list(COLORS)), size, (0, 0, 0, 0))


def place(rng: random.Random, objs: list[Obj], width: int, height: int, gap: int = 4, tries: int = 200,
          grid: int = 0) -> list[Obj]:
    """Give each object a box inside the canvas that overlaps no other (objects that do not fit are dropped).

    ``grid`` > 0 snaps objects to a grid of that many pixels (28: one merged vision token per cell):
    a small object is centred in one cell, a large one on a 2x2 block of cells, so each object is
    seen by whole tokens rather than straddling four. That is the easy end of the perception tasks.
    """
    placed: list[Obj] = []
    for obj in objs:
        side = rng.randint(*SIZES[obj.size])
        span = grid * (1 if side <= grid - 2 else 2) if grid else 0
        for _ in range(tries):
            if grid:
                x = rng.randrange(0, width // grid - span // grid + 1) * grid + (span - side) // 2
                y = rng.randrange(0, height // grid - span // grid + 1) * grid + (span - side) // 2
            else:
                x, y = rng.randint(1, width - side - 1), rng.randint(1, height - side - 1)
            box = (x, y, x + side, y + side)
            if all(box[2] + gap <= o.box[0] or o.box[2] + gap <= box[0] or box[3] + gap <= o.box[1]
                   or o.box[3] + gap <= box[1] for o in placed):
                placed.append(Obj(obj.shape, obj.color, obj.size, box))
                break
    return placed


EASY_BELOW = 0.25  # below this difficulty, a share of samples are warm-ups (see easy())


def easy(rng: random.Random, difficulty: float) -> bool:
    """Whether this sample is a warm-up: with probability ``1 - difficulty / EASY_BELOW`` below
    EASY_BELOW, never above. Draws from ``rng`` only below EASY_BELOW, so harder settings keep
    exactly the samples they had."""
    return difficulty < EASY_BELOW and rng.random() >= difficulty / EASY_BELOW


def grid_for(rng: random.Random, difficulty: float, cell: int = 28) -> int:
    """The placement grid of one image: objects sit on the token grid with probability 1 - difficulty."""
    return cell if rng.random() >= difficulty else 0


def render(objs: list[Obj], width: int, height: int) -> Image.Image:
    image = canvas(width, height)
    for obj in objs:
        draw_obj(image, obj)
    return image


def where(obj: Obj, width: int, height: int) -> str:
    """'top left', 'center', 'bottom' ... from the object's centre."""
    cx, cy = obj.center
    row = "top" if cy < height / 3 else "bottom" if cy > 2 * height / 3 else ""
    col = "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else ""
    return f"{row} {col}".strip() or "center"


def scaled(rng: random.Random, difficulty: float, low: int, high: int) -> int:
    """A random integer in [low, low + difficulty * (high - low)]: difficulty raises the ceiling."""
    return rng.randint(low, max(low, round(low + difficulty * (high - low))))


def canvas_side(rng: random.Random, difficulty: float, sides: tuple[int, ...] = (112, 168, 224)) -> int:
    """A canvas side from the first 1 + difficulty * (len(sides) - 1) of ``sides``: harder, larger images
    (more positions to search, smaller objects relative to the image)."""
    return rng.choice(sides[: 1 + round(difficulty * (len(sides) - 1))])


def text_box(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int) -> tuple[int, int, int, int]:
    """The pixel box ``text`` drawn at ``xy`` with ``font(size)`` covers (x2, y2 exclusive)."""
    x1, y1, x2, y2 = draw.textbbox(xy, text, font=font(size))
    return int(x1), int(y1), int(x2) + 1, int(y2) + 1


def join(parts: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


# system fonts OCR may draw with (common on Linux); any that is missing falls back to Pillow's own
FONT_FAMILIES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Italic.ttf",
                 "DejaVuSansMono.ttf", "DejaVuSansCondensed-Oblique.ttf")


@lru_cache(maxsize=256)
def font(size: int, family: str | None = None) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font, or ``family`` (a font file name) if the system has it."""
    if family is not None:
        try:
            return ImageFont.truetype(family, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def font_name(size: int, family: str | None = None) -> str:
    """The file name of the font ``font(size, family)`` draws with, or 'pillow-default'."""
    path = getattr(font(size, family), "path", None)
    return Path(path).name if isinstance(path, str) else "pillow-default"


def plural(word: str, n: int) -> str:
    return word if n == 1 else word + "es" if word.endswith("s") else word + "s"
