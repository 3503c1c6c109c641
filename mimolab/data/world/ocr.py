"""OCR: a word or number rendered with PIL's scalable default font, answered verbatim.

Difficulty in [0, 1] scales distortion: rotation up to 20 degrees, Gaussian blur up to 1.2 px,
pixel noise up to sigma 25, and a second token ("river 42"). ``meta["box"]`` is the text's pixel
box (x2, y2 exclusive), measured on the rendered mask before blur and noise.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mimolab.data.world.scene import Sample, assistant, canvas, font, user

WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "robot", "maple", "ocean", "candle", "garden")
WIDTH, HEIGHT = 168, 56
INK = (20, 20, 20)
PROMPTS = ("Read the text in the image.", "What does the image say?")


def _text(rng: random.Random, difficulty: float) -> str:
    text = rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(0, 9999))
    if difficulty > 0.5 and rng.random() < 0.5:
        text = f"{text} {rng.randint(10, 99)}"
    return text


def _degrade(image: Image.Image, rng: random.Random, difficulty: float) -> Image.Image:
    """Blur and additive Gaussian noise, both scaled by difficulty (seeded from ``rng``)."""
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 1.2 * difficulty)))
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 25 * difficulty, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def ocr(rng: random.Random, difficulty: float) -> Sample:
    text, size = _text(rng, difficulty), rng.randint(14, 24)
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(mask).text((rng.randint(4, 30), rng.randint(4, 20)), text, fill=255, font=font(size))
    angle = rng.uniform(-20, 20) * difficulty
    mask = mask.rotate(angle, resample=Image.BILINEAR, center=(WIDTH // 2, HEIGHT // 2))
    box = mask.point(lambda v: 255 if v > 64 else 0).getbbox() or (0, 0, 1, 1)
    image = Image.composite(Image.new("RGB", mask.size, INK), canvas(WIDTH, HEIGHT), mask)
    if difficulty > 0:
        image = _degrade(image, rng, difficulty)
    return Sample("ocr", [user(image, rng.choice(PROMPTS)), assistant(text)], {"text": text},
                  {"box": list(box), "font_size": size, "angle": round(angle, 2)})
