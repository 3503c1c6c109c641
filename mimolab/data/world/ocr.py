"""OCR: words and numbers rendered in varied fonts, sizes and angles, blurred and noised; answered
verbatim, with the pixel box of every word.

Two question kinds: 'read' (the reply is the text) and, with probability difficulty / 2, 'spot'
(the reply is Qwen2.5-VL's text-spotting JSON, ``[{"bbox_2d": [x1, y1, x2, y2], "text": ...}]``).
``answer`` always holds ``text`` and ``boxes`` (one entry per word, x2/y2 exclusive), measured on
each word's own rendered mask after rotation and before blur and noise.

Difficulty in [0, 1] scales: rotation (up to 20 degrees), Gaussian blur (up to 1.2 px), pixel
noise (up to sigma 25), the number of words (1 to 3), the share of spotting questions and the
canvas (168x56, or 168x84 above 0.5). Rotation shrinks where a long line would leave the canvas.
Below ``scene.EASY_BELOW`` a share of samples are warm-ups: one of the twelve WORDS, 28 px, in the
first font family, upright and clean (a twelve-way reading task a small ViT learns first).
The font is one of ``scene.FONT_FAMILIES`` (Pillow's own where a family is missing; ``meta["font"]``
says which drew), 14-24 px.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mimolab.data.world.scene import FONT_FAMILIES, Sample, assistant, canvas, easy, font, font_name, scaled, user

WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "robot", "maple", "ocean", "candle", "garden")
WIDTH = 168
HEIGHTS = (56, 84)  # the taller canvas (difficulty > 0.5) leaves room to rotate a line
INK = (20, 20, 20)
READ_PROMPTS = ("Read the text in the image.", "What does the image say?")
SPOT_PROMPTS = ("Find every word in the image and give its bbox and text as JSON.",)


def _token(rng: random.Random) -> str:
    return rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(0, 9999))


def _layout(words: list[str], size: int, family: str, height: int, rng: random.Random) -> list[tuple[int, int]]:
    """Top-left corners of the words on one line, starting at a random margin that keeps them inside."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    widths = [probe.textlength(w, font=font(size, family)) for w in words]
    space = probe.textlength(" ", font=font(size, family))
    line = sum(widths) + space * (len(words) - 1)
    x = rng.randint(4, max(4, int(WIDTH - 6 - line)))
    y = rng.randint(4, height - size - 10)
    corners = []
    for width in widths:
        corners.append((x, y))
        x = round(x + width + space)
    return corners


def _fitting_angle(angle: float, words: list[str], corners: list[tuple[int, int]], size: int, family: str,
                   height: int) -> float:
    """``angle``, shrunk until the text's box, turned about the image centre either way, stays inside
    the image (a long line turned by 20 degrees would lose its ends)."""
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [probe.textbbox(xy, w, font=font(size, family)) for w, xy in zip(words, corners)]
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    cx, cy = WIDTH / 2, height / 2
    while True:
        cos, sin = math.cos(math.radians(abs(angle))), math.sin(math.radians(abs(angle)))
        dx = max(abs(x - cx) * cos + abs(y - cy) * sin for x in (x1, x2) for y in (y1, y2))
        dy = max(abs(x - cx) * sin + abs(y - cy) * cos for x in (x1, x2) for y in (y1, y2))
        if (dx <= cx - 2 and dy <= cy - 2) or abs(angle) < 0.5:
            return angle
        angle *= 0.8


def _word_masks(words: list[str], corners: list[tuple[int, int]], size: int, family: str, angle: float,
                height: int) -> list[Image.Image]:
    """One rotated 'L' mask per word (the same rotation about the image centre for all)."""
    masks = []
    for word, xy in zip(words, corners):
        mask = Image.new("L", (WIDTH, height), 0)
        ImageDraw.Draw(mask).text(xy, word, fill=255, font=font(size, family))
        masks.append(mask.rotate(angle, resample=Image.BILINEAR, center=(WIDTH // 2, height // 2)))
    return masks


def _degrade(image: Image.Image, rng: random.Random, difficulty: float) -> Image.Image:
    """Blur and additive Gaussian noise, both scaled by difficulty (seeded from ``rng``)."""
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 1.2 * difficulty)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 25 * difficulty, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def ocr(rng: random.Random, difficulty: float) -> Sample:
    if easy(rng, difficulty):  # a warm-up: one of the WORDS, large, in the first font family, upright
        family, size, words = FONT_FAMILIES[0], 28, [rng.choice(WORDS)]
    else:
        family, size = rng.choice(FONT_FAMILIES), rng.randint(14, 24)
        words = [_token(rng) for _ in range(scaled(rng, difficulty, 1, 3))]
    while sum(font(size, family).getlength(w + " ") for w in words) > WIDTH - 12:  # keep one line inside
        size -= 1
    height = HEIGHTS[difficulty > 0.5]
    corners = _layout(words, size, family, height, rng)
    angle = _fitting_angle(rng.uniform(-20, 20) * difficulty, words, corners, size, family, height)
    masks = _word_masks(words, corners, size, family, angle, height)
    ink = masks[0]
    for mask in masks[1:]:
        ink = Image.fromarray(np.maximum(np.asarray(ink), np.asarray(mask)))
    # a word's box: where its ink is clearly visible (over a quarter of full strength)
    boxes = [{"bbox_2d": list(m.point(lambda v: 255 if v > 64 else 0).getbbox() or (0, 0, 1, 1)), "text": w}
             for w, m in zip(words, masks)]
    image = Image.composite(Image.new("RGB", ink.size, INK), canvas(WIDTH, height), ink)
    if difficulty > 0:
        image = _degrade(image, rng, difficulty)
    text = " ".join(words)
    spot = rng.random() < difficulty / 2
    prompt, reply = (rng.choice(SPOT_PROMPTS), json.dumps(boxes)) if spot else (rng.choice(READ_PROMPTS), text)
    return Sample("ocr", [user(image, prompt), assistant(reply)], {"text": text, "boxes": boxes},
                  {"kind": "spot" if spot else "read", "font": font_name(size, family), "font_size": size, "angle": round(angle, 2)})
