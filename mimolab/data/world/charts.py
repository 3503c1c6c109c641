"""Charts and tables: read a value, find the largest or smallest, take a difference.

Bar charts have lettered bars (A, B, ...) with their values printed above them; tables list
fruit names and counts in a ruled grid. Values are distinct, so 'the largest' is unambiguous.
Difficulty in [0, 1] adds bars/rows and the harder 'difference' question. Below ``scene.EASY_BELOW`` a
share of questions are warm-ups: the largest or smallest value itself ('max_value', 'min_value'), which
needs no bar or row found by its name first. Reading a named entry is a lookup the small models did not
learn from the warm-up-free world (chart 0.25, chance 0.19, after the cpu pipeline's stage 4) even with a
ViT whose every token knew its bar and value; the warm-up is drawn after the image, so images never change.
``bar_chart`` is reused by visual math.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from mimolab.data.world.scene import Sample, assistant, canvas, easy, font, user

BAR_COLOR, INK, RULE = (40, 80, 220), (0, 0, 0), (120, 120, 120)
ITEMS = ("apples", "pears", "plums", "figs", "limes", "kiwis")
LEFT, BAR, GAP, BASE, UNIT = 16, 22, 8, 150, 14  # first bar's x, bar width, gap, baseline y, pixels per unit
ROW = 20  # table row height


def bar_chart(labels: list[str], values: list[int]) -> Image.Image:
    """A 168x168 bar chart of values 1-9 (14 px per unit), each bar labelled below, valued above."""
    image = canvas(168, 168)
    draw = ImageDraw.Draw(image)
    draw.line((10, BASE, 160, BASE), fill=INK)
    for i, (label, value) in enumerate(zip(labels, values)):
        x = LEFT + i * (BAR + GAP)
        draw.rectangle((x, BASE - UNIT * value, x + BAR, BASE - 1), fill=BAR_COLOR)
        draw.text((x + 6, BASE + 2), label, fill=INK, font=font(12))
        draw.text((x + 6, BASE - UNIT * value - 14), str(value), fill=INK, font=font(12))
    return image


def table(names: list[str], values: list[int]) -> Image.Image:
    """A 168-wide ruled table with a header row ('item', 'count') and one row per name."""
    image = canvas(168, 28 * ((ROW * (len(names) + 1) + 8 + 27) // 28))
    draw = ImageDraw.Draw(image)
    for r, (name, value) in enumerate([("item", "count")] + list(zip(names, map(str, values)))):
        y = 4 + r * ROW
        draw.rectangle((8, y, 159, y + ROW), outline=RULE)
        draw.line((100, y, 100, y + ROW), fill=RULE)
        draw.text((14, y + 4), name, fill=INK, font=font(12))
        draw.text((108, y + 4), value, fill=INK, font=font(12))
    return image


def entry_boxes(form: str, values: list[int]) -> list[tuple[int, int, int, int]]:
    """The pixel box (x1, y1, x2, y2; x2, y2 exclusive) of each bar or table row as drawn: a bar with its
    value above and its letter below, a row with its name and its count."""
    if form == "bar_chart":
        return [(x, BASE - UNIT * v - 14, x + BAR + 1, BASE + 16)
                for x, v in ((LEFT + i * (BAR + GAP), v) for i, v in enumerate(values))]
    return [(8, 4 + r * ROW, 160, 4 + (r + 1) * ROW + 1) for r in range(1, len(values) + 1)]


def _question(rng: random.Random, difficulty: float, names: list[str], values: list[int],
              what: str) -> tuple[str, str, dict, str]:
    """(question, reply, answer, kind) about a chart or table whose entries are called ``what``."""
    if easy(rng, difficulty):
        kind = rng.choice(("max_value", "min_value"))
        value = max(values) if kind == "max_value" else min(values)
        word = "largest" if kind == "max_value" else "smallest"
        where = "in the chart" if what == "bar" else "in the table"
        return f"What is the {word} value {where}?", str(value), {"number": value}, kind
    kind = rng.choice(("read", "max", "min", "diff") if difficulty >= 0.3 else ("read", "max", "min"))
    ref = [f"bar {name}" if what == "bar" else f"the {name} row" for name in names]
    if kind == "read":
        i = rng.randrange(len(names))
        return f"What is the value of {ref[i]}?", str(values[i]), {"number": values[i]}, kind
    if kind in ("max", "min"):
        i = values.index(max(values) if kind == "max" else min(values))
        word = "largest" if kind == "max" else "smallest"
        return f"Which {what} has the {word} value?", names[i], {"text": names[i]}, kind
    i, j = rng.sample(range(len(names)), 2)
    diff = values[i] - values[j]
    return f"What is {ref[i]} minus {ref[j]}?", str(diff), {"number": diff}, kind


def chart(rng: random.Random, difficulty: float) -> Sample:
    n = rng.randint(3, 3 + round(2 * difficulty))
    values = rng.sample(range(1, 10), n)
    if rng.random() < 0.6:
        names, what, form = [chr(65 + i) for i in range(n)], "bar", "bar_chart"
        image = bar_chart(names, values)
    else:
        names, what, form = rng.sample(ITEMS, n), "row", "table"
        image = table(names, values)
    question, reply, answer, kind = _question(rng, difficulty, names, values, what)
    return Sample("chart", [user(image, question), assistant(reply)], answer,
                  {"form": form, "labels": names, "values": values, "kind": kind})
