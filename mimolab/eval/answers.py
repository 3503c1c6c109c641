"""Reading a model's reply: the one parser of each answer format, shared by the evaluation metric
(``mimolab.eval.metrics``), the RL rewards (``mimolab.rl.rewards``) and the demo overlay
(``mimolab.demo``), so a reply that the evaluation reads as "3" or as a click at (12, 34) is read the
same way by the reward that trains towards it and by the picture that shows it.

Every parser looks at the final answer only (``final_answer``: the text after the last ``</think>``)
and forgives surrounding text: "There are 3 objects." is a count of 3, "3.0" equals 3. A parser that
finds nothing returns None (or an empty list); none raises on malformed text.

| format | parser | read by |
|---|---|---|
| a number (count, chart value) | ``parse_number`` | counting, chart |
| ``\\boxed{...}`` | ``parse_boxed`` | visual_math, text_reasoning |
| ``[x1, y1, x2, y2]`` (``bbox_2d``) or ``(x1,y1),(x2,y2)`` | ``parse_boxes`` | grounding, gui, refcoco, demo |
| ``click(x, y)`` | ``parse_click`` | gui, demo |
| ``type("text")`` | ``parse_typed`` | gui |
| ``[start, end]`` in seconds or ``[mm:ss, mm:ss]``, "from 2 to 6 seconds" | ``parse_span`` | video |
| "From 1.0 to 2.0 a red circle ..." | ``parse_events`` | video captions |
| a JSON list of objects | ``parse_json_list`` | OCR text spotting, demo labels and points |
| "two small red circles" | ``objects`` | caption |
| an option letter | ``option_letter`` | mcq |
| Qwen2-VL box text with its label | ``parse_box_text`` | demo labels |

Light to import (``re`` and ``json`` only): reward worker processes import it.
"""

from __future__ import annotations

import json
import re

NUMBER = r"-?\d+(?:\.\d+)?"
# a number standing alone: not the 2 of 'bbox_2d', not a piece of '1.2.3'
LONE_NUMBER = re.compile(r"(?<![\w.])" + NUMBER + r"(?!\w)")
BOX = re.compile(rf"\[\s*({NUMBER})\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*,\s*({NUMBER})\s*\]")
BOX_TEXT = re.compile(rf"(?:<\|object_ref_start\|>([^<]*)<\|object_ref_end\|>)?\s*(?:<\|box_start\|>)?"
                      rf"\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)\s*,\s*\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)")
CLICK = re.compile(rf"click\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)")
TYPED = re.compile(r'type\(\s*"([^"]*)"\s*\)')
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
TIME = r"(\d+:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?)"
SPAN = re.compile(r"\[\s*" + TIME + r"\s*s?\s*,\s*" + TIME + r"\s*s?\s*\]")
UNIT = r"(?:\s*(?:s|secs?|seconds?)\b)?"
WORD_SPAN = re.compile(r"\b(?:[Ff]rom|[Bb]etween)\s+" + TIME + UNIT + r"\s*(?:to|and|until|-)\s*" + TIME + UNIT)
EVENT = re.compile(r"[Ff]rom " + TIME + r" to " + TIME + r" an? (\w+ \w+)")
JSON_LIST = re.compile(r"\[\s*\{.*?\}\s*\]", re.S)
NUMBER_WORDS = {"no": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8}
OBJECT = re.compile(r"\b(?:(no|a|an|one|two|three|four|five|six|seven|eight|\d+) )?(small|large) "
                    r"(red|green|blue|yellow|purple|orange) (circle|square|triangle)s?\b")


def final_answer(reply: str) -> str:
    """The answer a reply gives: the text after the last ``</think>`` (the whole reply without thinking
    tags), without the end-of-turn token. A ``<think>`` never closed gives "": all of it is thinking,
    as ``mimolab.tokenizer.split_thinking`` reads it, so a number in unfinished thoughts is no answer."""
    reply = reply.replace("<|im_end|>", "")
    if "</think>" in reply:
        return reply.rsplit("</think>", 1)[-1].strip()
    return "" if "<think>" in reply else reply.strip()


def parse_number(text: str) -> float | None:
    """The first number standing alone: 'There are 3.' -> 3.0, '3.0 objects' -> 3.0, 'bbox_2d' -> None."""
    found = LONE_NUMBER.search(text)
    return float(found.group()) if found else None


def parse_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (None without one)."""
    boxed = BOXED.findall(text)
    return boxed[-1] if boxed else None


def parse_boxes(text: str) -> list[list[float]]:
    """Every box in the text, in order: ``[x1, y1, x2, y2]`` (Qwen2.5-VL's JSON ``bbox_2d`` or a bare
    list) and Qwen2-VL box text ``(x1,y1),(x2,y2)`` (with or without its label and markers)."""
    found = [(m.start(), [float(v) for v in m.groups()]) for m in BOX.finditer(text)]
    found += [(m.start(2), [float(v) for v in m.groups()[1:]]) for m in BOX_TEXT.finditer(text)]
    return [box for _, box in sorted(found, key=lambda pair: pair[0])]


def parse_box_text(text: str) -> list[tuple[list[float], str]]:
    """(box, label) for each Qwen2-VL box text ``<|object_ref_start|>label<|object_ref_end|>
    <|box_start|>(x1,y1),(x2,y2)<|box_end|>`` (the label and markers optional)."""
    return [([float(v) for v in found.groups()[1:]], (found.group(1) or "").strip())
            for found in BOX_TEXT.finditer(text)]


def parse_click(text: str) -> tuple[float, float] | None:
    """(x, y) of the first ``click(x, y)``: the one action a GUI reply is scored on."""
    found = CLICK.search(text)
    return (float(found.group(1)), float(found.group(2))) if found else None


def parse_typed(text: str) -> str | None:
    """The text of the first ``type("...")``."""
    found = TYPED.search(text)
    return found.group(1) if found else None


def seconds(text: str) -> float:
    """'2.5' -> 2.5, '01:02.5' -> 62.5."""
    if ":" in text:
        minutes, secs = text.split(":")
        return 60 * int(minutes) + float(secs)
    return float(text)


def parse_span(text: str) -> tuple[float, float] | None:
    """The first span in seconds: '[1.0, 3.0]', '[1.0 s, 3.0 s]', '[00:01, 00:03]', or in words, 'from
    2.0 to 6.0 seconds', 'between 00:02 and 00:06'."""
    found = [m for m in (SPAN.search(text), WORD_SPAN.search(text)) if m]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    return seconds(first.group(1)), seconds(first.group(2))


def parse_events(text: str) -> dict[str, tuple[float, float]]:
    """'From 1.0 to 2.0 a red circle ...' -> {'red circle': (1.0, 2.0)}; the first span of each label."""
    events: dict[str, tuple[float, float]] = {}
    for start, end, label in EVENT.findall(text):
        events.setdefault(label, (seconds(start), seconds(end)))
    return events


def parse_json_list(text: str) -> list[dict]:
    """The objects of every JSON list of objects in the text (``[{"bbox_2d": ..., "text": ...}]``),
    skipping lists that do not parse."""
    items: list[dict] = []
    for block in JSON_LIST.findall(text):
        try:
            parsed = json.loads(block)
        except ValueError:
            continue
        items += [item for item in parsed if isinstance(item, dict)] if isinstance(parsed, list) else []
    return items


def objects(text: str) -> dict[str, int]:
    """'two small red circles and a large blue square' -> {'small red circle': 2, 'large blue square': 1}."""
    counts: dict[str, int] = {}
    for count, size, color, shape in OBJECT.findall(text):
        n = int(count) if count.isdigit() else NUMBER_WORDS.get(count, 1)
        counts[f"{size} {color} {shape}"] = counts.get(f"{size} {color} {shape}", 0) + n
    return counts


def option_letter(reply: str) -> str | None:
    """The option a multiple-choice reply picks: 'B', '(B) cat', 'B. cat', 'The answer is B.'; a capital
    used as a word ('A cat', 'I think') is not an option."""
    for found in re.finditer(r"(?<![A-Za-z'])(\()?([A-J])([).:,])?(?![A-Za-z'])", reply):
        marked = found.group(1) or found.group(3)
        if marked or not re.match(r"\s+[a-z]", reply[found.end():]):
            return found.group(2)
    return None


__all__ = ["final_answer", "objects", "option_letter", "parse_box_text", "parse_boxed", "parse_boxes",
           "parse_click", "parse_events", "parse_json_list", "parse_number", "parse_span", "parse_typed",
           "seconds"]
