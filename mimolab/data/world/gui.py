"""GUI screens: a menu bar, a search field and buttons; sometimes a modal dialog or an open menu on top.

Three kinds of question: an action in the GUI-agent convention, ``click(x, y)`` at the centre of the
named element or ``type("text")`` into the search field; and element grounding ('Where is the Save
button?') answered as ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``. Every answer carries the
element's box (``bbox_2d``), which a point-in-box or GIoU reward needs.

``meta["elements"]`` maps every element that can be acted on to its pixel box (x1, y1, x2, y2):
elements under an open dialog or menu are left out, since they cannot be clicked. Difficulty adds
buttons (2 to 6), shuffles their places, and opens dialogs and drop-down menus (each with
probability 0.3 * difficulty).
"""

from __future__ import annotations

import json
import random

from PIL import ImageDraw

from mimolab.data.world.scene import Sample, assistant, canvas, font, text_box, user

SIZE = 224
BUTTONS = ("OK", "Cancel", "Save", "Open", "Help", "Close", "Next", "Back")
MENUS = {"File": ("New", "Print", "Export", "Exit"), "Edit": ("Undo", "Copy", "Paste"),
         "View": ("Zoom in", "Zoom out"), "Tools": ("Options", "Plugins")}
DIALOGS = ("Save changes?", "Delete file?", "Quit now?")
QUERIES = ("cats", "weather", "maps", "news", "music")
SLOTS = [(16 + col * 100, 80 + row * 44) for row in range(3) for col in range(2)]  # button places
Box = tuple[int, int, int, int]


def _menu_bar(draw: ImageDraw.ImageDraw) -> dict[str, Box]:
    draw.rectangle((0, 0, SIZE - 1, 20), fill=(225, 225, 225))
    menus = {}
    for i, item in enumerate(MENUS):
        x1, _, x2, _ = text_box(draw, (6 + 44 * i, 4), item, 11)
        menus[f"{item} menu"] = (x1 - 3, 0, x2 + 3, 21)  # the whole bar's height is clickable
        draw.text((6 + 44 * i, 4), item, fill=(0, 0, 0), font=font(11))
    return menus


def _button(draw: ImageDraw.ImageDraw, box: Box, name: str, fill: tuple[int, int, int]) -> None:
    draw.rounded_rectangle(box, radius=5, fill=fill)
    draw.text((box[0] + 10, box[1] + 8), name, fill=(255, 255, 255), font=font(13))


def _form(draw: ImageDraw.ImageDraw, names: list[str], slots: list[tuple[int, int]]) -> dict[str, Box]:
    field = (16, 36, 208, 60)
    draw.rectangle(field, outline=(90, 90, 90), fill=(250, 250, 250))
    draw.text((22, 42), "Search...", fill=(150, 150, 150), font=font(11))
    elements = {"search field": field}
    for name, (x, y) in zip(names, slots):
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


def _drop_down(draw: ImageDraw.ImageDraw, menu: str, anchor: Box) -> tuple[Box, dict[str, Box]]:
    """The open ``menu`` under its title: (the list's box, its items' boxes)."""
    items = MENUS[menu]
    x1, y1 = anchor[0], 21
    panel = (x1, y1, x1 + 76, y1 + 20 * len(items) + 4)
    draw.rectangle(panel, fill=(245, 245, 245), outline=(90, 90, 90))
    elements = {}
    for i, item in enumerate(items):
        box = (x1 + 2, y1 + 2 + 20 * i, x1 + 75, y1 + 22 + 20 * i)
        draw.text((box[0] + 6, box[1] + 4), item, fill=(0, 0, 0), font=font(11))
        elements[f"{item} item"] = box
    return panel, elements


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _screen(rng: random.Random, difficulty: float):
    """Draw a screen; returns (image, the elements one can act on, the overlay: none/dialog/menu)."""
    image = canvas(SIZE, SIZE)
    draw = ImageDraw.Draw(image)
    menus = _menu_bar(draw)
    names = rng.sample(BUTTONS, rng.randint(2, 2 + round(4 * difficulty)))
    slots = rng.sample(SLOTS, len(names)) if rng.random() < difficulty else SLOTS[: len(names)]
    elements = _form(draw, names, slots)
    weights = (1 - 0.6 * difficulty, 0.3 * difficulty, 0.3 * difficulty)
    overlay = rng.choices(("none", "dialog", "menu"), weights=weights)[0]
    if overlay == "dialog":
        elements = _dialog(draw, rng.choice(DIALOGS))
    elif overlay == "menu":
        menu = rng.choice(list(MENUS))
        panel, items = _drop_down(draw, menu, menus[f"{menu} menu"])
        elements = {**{k: v for k, v in elements.items() if not _overlaps(v, panel)}, **items}
    return image, {**elements, **menus}, overlay


def _centre(box: Box) -> list[int]:
    return [(box[0] + box[2]) // 2, (box[1] + box[3]) // 2]


def gui(rng: random.Random, difficulty: float) -> Sample:
    image, elements, overlay = _screen(rng, difficulty)
    kind = rng.choices(("click", "type", "ground"), weights=(0.6, 0.2 if "search field" in elements else 0, 0.2))[0]
    clickable = [k for k in elements if k != "search field"]
    if kind == "type":
        target, query = "search field", rng.choice(QUERIES)
        question, reply = f'Type "{query}" into the search field.', f'type("{query}")'
        answer = {"action": "type", "text": query, "target": target}
    else:
        # open menus and dialogs are what the screen is about: ask about them more often
        fresh = [k for k in clickable if k.endswith("item") or overlay == "dialog" and k in ("Yes button", "No button")]
        target = rng.choice(fresh if fresh and rng.random() < 0.5 else clickable)
        if kind == "click":
            point = _centre(elements[target])
            question, reply = f"Click the {target}.", f"click({point[0]}, {point[1]})"
            answer = {"action": "click", "point": point, "target": target}
        else:
            boxes = [{"bbox_2d": list(elements[target]), "label": target}]
            question = rng.choice((f"Where is the {target}? Output its bbox coordinates in JSON format.",
                                   f"Locate the {target} and give its bounding box as JSON."))
            reply, answer = json.dumps(boxes), {"action": "ground", "target": target, "boxes": boxes}
    answer["bbox_2d"] = list(elements[target])
    return Sample("gui", [user(image, question), assistant(reply)], answer,
                  {"elements": {k: list(v) for k, v in elements.items()}, "overlay": overlay, "kind": kind})
