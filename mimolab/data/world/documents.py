"""Text-in-image tasks: OCR, bar charts, GUI screens.

OCR renders words and numbers with PIL's scalable default font at varied sizes, with rotation,
blur and noise growing with difficulty. Charts are bar charts with lettered bars and printed
values on the axis; questions read a value, compare or compute. GUI screens hold buttons, a text
field, a menu bar and sometimes a dialog; answers are ``click(x, y)`` at an element's centre or
``type("text")``.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mimolab.data.world.scene import Sample, assistant, canvas, font, user

WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "robot", "maple", "ocean", "candle", "garden")
BUTTONS = ("OK", "Cancel", "Save", "Open", "Help", "Close", "Next", "Back")


def ocr(rng: random.Random, difficulty: float) -> Sample:
    text = rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(0, 9999))
    if difficulty > 0.5 and rng.random() < 0.5:
        text = f"{text} {rng.randint(10, 99)}"
    size = rng.randint(14, 24)
    layer = Image.new("L", (168, 56), 0)
    draw = ImageDraw.Draw(layer)
    x, y = rng.randint(4, 30), rng.randint(4, 20)
    draw.text((x, y), text, fill=255, font=font(size))
    angle = rng.uniform(-20, 20) * difficulty
    layer = layer.rotate(angle, resample=Image.BILINEAR, center=(84, 28))
    box = layer.point(lambda v: 255 if v > 64 else 0).getbbox() or (0, 0, 1, 1)
    image = Image.composite(Image.new("RGB", layer.size, (20, 20, 20)), canvas(*layer.size), layer)
    if difficulty > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0, 1.2 * difficulty)))
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 25 * difficulty, (56, 168, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    prompt = rng.choice(("Read the text in the image.", "What does the image say?"))
    return Sample("ocr", [user(image, prompt), assistant(text)], {"text": text},
                  {"box": list(box), "font_size": size, "angle": round(angle, 2)})


def chart(rng: random.Random, difficulty: float) -> Sample:
    n = rng.randint(3, 3 + round(2 * difficulty))
    labels = [chr(65 + i) for i in range(n)]
    values = [rng.randint(1, 9) for _ in range(n)]
    image = canvas(168, 168)
    draw = ImageDraw.Draw(image)
    bar, gap, base = 22, 8, 150
    draw.line((10, base, 160, base), fill=(0, 0, 0))
    for i, (label, value) in enumerate(zip(labels, values)):
        x = 16 + i * (bar + gap)
        draw.rectangle((x, base - 14 * value, x + bar, base - 1), fill=(40, 80, 220))
        draw.text((x + 6, base + 2), label, fill=(0, 0, 0), font=font(12))
        draw.text((x + 6, base - 14 * value - 14), str(value), fill=(0, 0, 0), font=font(12))
    kind = rng.choice(("read", "max", "diff") if difficulty >= 0.3 else ("read", "max"))
    if kind == "read":
        i = rng.randrange(n)
        question, reply, answer = f"What is the value of bar {labels[i]}?", str(values[i]), {"number": values[i]}
    elif kind == "max":
        i = values.index(max(values))
        question, reply, answer = "Which bar is the tallest?", labels[i], {"text": labels[i]}
    else:
        i, j = rng.sample(range(n), 2)
        question = f"What is bar {labels[i]} minus bar {labels[j]}?"
        reply, answer = str(values[i] - values[j]), {"number": values[i] - values[j]}
    return Sample("chart", [user(image, question), assistant(reply)], answer,
                  {"labels": labels, "values": values, "kind": kind})


def gui(rng: random.Random, difficulty: float) -> Sample:
    image = canvas(224, 224)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 223, 20), fill=(225, 225, 225))  # menu bar
    for i, item in enumerate(("File", "Edit", "View")):
        draw.text((6 + 40 * i, 4), item, fill=(0, 0, 0), font=font(11))
    field = (16, 36, 208, 60)
    draw.rectangle(field, outline=(90, 90, 90), fill=(250, 250, 250))
    draw.text((22, 42), "Search...", fill=(150, 150, 150), font=font(11))
    names = rng.sample(BUTTONS, rng.randint(2, 2 + round(2 * difficulty)))
    elements = {"search field": field}
    for i, name in enumerate(names):
        x, y = 16 + (i % 2) * 100, 80 + (i // 2) * 44
        box = (x, y, x + 88, y + 30)
        draw.rounded_rectangle(box, radius=5, fill=(60, 120, 200))
        draw.text((x + 10, y + 8), name, fill=(255, 255, 255), font=font(13))
        elements[name] = box
    if rng.random() < 0.3:
        query = rng.choice(("cats", "weather", "maps", "news"))
        question, reply = f'Type "{query}" into the search field.', f'type("{query}")'
        answer = {"action": "type", "text": query, "target": "search field", "box": list(field)}
    else:
        target = rng.choice(names)
        box = elements[target]
        point = [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]
        question, reply = f"Click the {target} button.", f"click({point[0]}, {point[1]})"
        answer = {"action": "click", "point": point, "target": target, "box": list(box)}
    return Sample("gui", [user(image, question), assistant(reply)], answer,
                  {"elements": {k: list(v) for k, v in elements.items()}})
