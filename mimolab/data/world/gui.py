"""GUI screens: a menu bar, a search field and buttons, sometimes a modal dialog on top.

Actions follow the GUI-agent convention: ``click(x, y)`` at the centre of the named element, or
``type("text")`` into the search field. ``meta["elements"]`` maps every element that can be
acted on to its pixel box (x1, y1, x2, y2); with a dialog open only the dialog and the menu bar
are listed, since the buttons behind it are covered. Difficulty adds buttons and dialogs.
"""

from __future__ import annotations

import random

from PIL import ImageDraw

from mimolab.data.world.scene import Sample, assistant, canvas, font, text_box, user

SIZE = 224
BUTTONS = ("OK", "Cancel", "Save", "Open", "Help", "Close", "Next", "Back")
MENUS = ("File", "Edit", "View", "Tools")
DIALOGS = ("Save changes?", "Delete file?", "Quit now?")
QUERIES = ("cats", "weather", "maps", "news", "music")
Box = tuple[int, int, int, int]


def _menu_bar(draw: ImageDraw.ImageDraw) -> dict[str, Box]:
    draw.rectangle((0, 0, SIZE - 1, 20), fill=(225, 225, 225))
    menus = {}
    for i, item in enumerate(MENUS):
        x1, y1, x2, y2 = text_box(draw, (6 + 44 * i, 4), item, 11)
        menus[f"{item} menu"] = (x1 - 3, 0, x2 + 3, 21)
        draw.text((6 + 44 * i, 4), item, fill=(0, 0, 0), font=font(11))
    return menus


def _button(draw: ImageDraw.ImageDraw, box: Box, name: str, fill: tuple[int, int, int]) -> None:
    draw.rounded_rectangle(box, radius=5, fill=fill)
    draw.text((box[0] + 10, box[1] + 8), name, fill=(255, 255, 255), font=font(13))


def _form(draw: ImageDraw.ImageDraw, names: list[str]) -> dict[str, Box]:
    field = (16, 36, 208, 60)
    draw.rectangle(field, outline=(90, 90, 90), fill=(250, 250, 250))
    draw.text((22, 42), "Search...", fill=(150, 150, 150), font=font(11))
    elements = {"search field": field}
    for i, name in enumerate(names):
        x, y = 16 + (i % 2) * 100, 80 + (i // 2) * 44
        elements[f"{name} button"] = (x, y, x + 88, y + 30)
        _button(draw, elements[f"{name} button"], name, (60, 120, 200))
    return elements


def _dialog(draw: ImageDraw.ImageDraw, title: str) -> dict[str, Box]:
    draw.rectangle((0, 22, SIZE - 1, SIZE - 1), fill=(200, 200, 200))  # the dimmed screen behind
    draw.rectangle((28, 70, 196, 160), fill=(250, 250, 250), outline=(60, 60, 60))
    draw.text((40, 84), title, fill=(0, 0, 0), font=font(13))
    elements = {"Yes button": (40, 116, 104, 146), "No button": (120, 116, 184, 146)}
    _button(draw, elements["Yes button"], "Yes", (40, 150, 70))
    _button(draw, elements["No button"], "No", (200, 60, 60))
    return elements


def _click(elements: dict[str, Box], target: str) -> tuple[str, str, dict]:
    box = elements[target]
    point = [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]
    return f"Click the {target}.", f"click({point[0]}, {point[1]})", {"action": "click", "point": point, "target": target}


def gui(rng: random.Random, difficulty: float) -> Sample:
    image = canvas(SIZE, SIZE)
    draw = ImageDraw.Draw(image)
    menus = _menu_bar(draw)
    names = rng.sample(BUTTONS, rng.randint(2, 2 + round(2 * difficulty)))
    elements = _form(draw, names)
    dialog = rng.random() < 0.4 * difficulty
    if dialog:
        elements = _dialog(draw, rng.choice(DIALOGS))
    elements.update(menus)
    if not dialog and rng.random() < 0.3:
        query = rng.choice(QUERIES)
        question, reply = f'Type "{query}" into the search field.', f'type("{query}")'
        answer = {"action": "type", "text": query, "target": "search field"}
    else:
        buttons = [k for k in elements if k.endswith("button")]
        target = rng.choice(list(menus)) if rng.random() < 0.2 else rng.choice(buttons)
        question, reply, answer = _click(elements, target)
    return Sample("gui", [user(image, question), assistant(reply)], answer,
                  {"elements": {k: list(v) for k, v in elements.items()}, "dialog": dialog})
