"""Per-task scores in [0, 1] for the synthetic world's answers (and real data in the same format).

One function, ``score(task, reply, answer, reference)``: ``answer`` is the sample's reference dict
(count, number, bbox_2d/boxes, span/events, action...), ``reference`` its reference reply text.
Every score is partial-credit where the task allows it, so a small model's progress shows before
it is perfect, and every parser is forgiving of surrounding text: a model that writes
"There are 3." for a count of 3 scores 1. A malformed reply scores 0, never raises.

| task | metric |
|---|---|
| counting | exact count |
| chart | exact number, or exact label (bar letter / row name) |
| interleaved | exact answer, normalised |
| caption | F1 of the objects named (size colour shape, with counts) against the reference |
| ocr | character similarity (1 - normalised edit distance, difflib) or box+text F1 for spotting |
| grounding | F1 of boxes matched at IoU >= 0.5 |
| gui | click inside the target's box / typed text equal / grounded box IoU >= 0.5 |
| video | IoU of the time span (seconds or [mm:ss, mm:ss]); timestamped captions: mean IoU per event |
| visual_math, text_reasoning | final answer equal (math-verify, boxed or plain, after ``</think>``) |
| text | character similarity |
| mcq (benchmark files) | the option letter |
| refcoco (benchmark files) | IoU >= 0.5 of the first box, rescaled from the resized image when ``resized_size`` is given |
| vqa (benchmark files) | normalised exact match with any of the answers |

Chance is not typed in anywhere: ``mimolab.eval.harness`` measures it as the score of the best
single blind answer (one held-out reference given to every sample).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

NUMBER = r"-?\d+(?:\.\d+)?"
NUMBER_WORDS = {"no": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8}
OBJECT = re.compile(r"\b(?:(no|a|an|one|two|three|four|five|six|seven|eight|\d+) )?(small|large) "
                    r"(red|green|blue|yellow|purple|orange) (circle|square|triangle)s?\b")
BOX = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")
TIME = r"(\d+:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?)"
SPAN = re.compile(r"\[\s*" + TIME + r"\s*s?\s*,\s*" + TIME + r"\s*s?\s*\]")
EVENT = re.compile(r"[Ff]rom " + TIME + r" to " + TIME + r" an? (\w+ \w+)")


def final_answer(reply: str) -> str:
    """The text after the last ``</think>`` (the whole reply when there is none)."""
    return reply.rsplit("</think>", 1)[-1].strip()


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


def first_number(text: str) -> float | None:
    """The first number standing alone ('There are 3.' -> 3; not the 2 of 'bbox_2d')."""
    found = re.search(r"(?<![\w.])" + NUMBER + r"(?![\w])", text)
    return float(found.group()) if found else None


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def parse_boxes(text: str) -> list[list[float]]:
    """Every ``[x1, y1, x2, y2]`` in the text (Qwen2.5-VL's JSON ``bbox_2d`` or bare lists)."""
    return [[float(v) for v in m.groups()] for m in BOX.finditer(text)]


def box_f1(predicted: list[list[float]], reference: list[list[float]], threshold: float = 0.5) -> float:
    """F1 of greedy one-to-one matches at IoU >= threshold (best pairs first)."""
    if not predicted or not reference:
        return float(not predicted and not reference)
    pairs = sorted(((iou(p, r), i, j) for i, p in enumerate(predicted) for j, r in enumerate(reference)), reverse=True)
    used_p, used_r, hits = set(), set(), 0
    for value, i, j in pairs:
        if value >= threshold and i not in used_p and j not in used_r:
            used_p.add(i), used_r.add(j)
            hits += 1
    return 2 * hits / (len(predicted) + len(reference))


def seconds(text: str) -> float:
    if ":" in text:
        minutes, secs = text.split(":")
        return 60 * int(minutes) + float(secs)
    return float(text)


def span_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


def parse_span(text: str) -> tuple[float, float] | None:
    found = SPAN.search(text)
    return (seconds(found.group(1)), seconds(found.group(2))) if found else None


def objects(text: str) -> dict[str, int]:
    """'two small red circles and a large blue square' -> {'small red circle': 2, 'large blue square': 1}."""
    counts: dict[str, int] = {}
    for count, size, color, shape in OBJECT.findall(text):
        n = int(count) if count.isdigit() else NUMBER_WORDS.get(count, 1)
        counts[f"{size} {color} {shape}"] = counts.get(f"{size} {color} {shape}", 0) + n
    return counts


def multiset_f1(predicted: dict[str, int], reference: dict[str, int]) -> float:
    hits = sum(min(n, reference.get(k, 0)) for k, n in predicted.items())
    total = sum(predicted.values()) + sum(reference.values())
    return 2 * hits / total if total else 1.0


def option_letter(reply: str) -> str | None:
    """The option a multiple-choice reply picks: 'B', '(B) cat', 'B. cat', 'The answer is B.'; a capital
    used as a word ('A cat', 'I think') is not an option."""
    for found in re.finditer(r"(?<![A-Za-z'])(\()?([A-J])([).:,])?(?![A-Za-z'])", reply):
        marked = found.group(1) or found.group(3)
        if marked or not re.match(r"\s+[a-z]", reply[found.end():]):
            return found.group(2)
    return None


def math_equal(reply: str, number: float) -> bool:
    """math-verify on the final answer (boxed or plain); a plain number comparison when it finds none."""
    answer = final_answer(reply)
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", answer)
    try:
        from math_verify import parse, verify

        parsed = parse(f"${boxed[-1]}$" if boxed else answer)
        if parsed:
            return bool(verify(parse(f"${number:g}$"), parsed))
    except Exception:  # math-verify's own time limit or a parse failure: fall back to the plain reading
        pass
    value = first_number(boxed[-1] if boxed else answer)
    return value is not None and abs(value - number) < 1e-6


def _gui(reply: str, answer: dict, reference: str) -> float:
    action = answer.get("action")
    if action == "click":
        found = re.search(r"click\(\s*(" + NUMBER + r")\s*,\s*(" + NUMBER + r")\s*\)", reply)
        if not found:
            return 0.0
        x, y = float(found.group(1)), float(found.group(2))
        x1, y1, x2, y2 = answer["bbox_2d"]
        return float(x1 <= x < x2 and y1 <= y < y2)
    if action == "type":
        typed = [re.search(r'type\(\s*"([^"]*)"\s*\)', text) for text in (reply, reference)]
        return float(bool(typed[0] and typed[1]) and typed[0].group(1) == typed[1].group(1))
    boxes = parse_boxes(reply)
    return float(bool(boxes) and iou(boxes[0], answer["bbox_2d"]) >= 0.5)


def _video(reply: str, answer: dict) -> float:
    if "span" in answer:
        span = parse_span(reply)
        return span_iou(span, tuple(answer["span"])) if span else 0.0
    predicted = {}
    for start, end, label in EVENT.findall(reply):
        predicted.setdefault(label, (seconds(start), seconds(end)))
    events = answer.get("events", [])
    if not events:
        return float(not predicted)
    return sum(span_iou(predicted[e["label"]], tuple(e["span"])) if e["label"] in predicted else 0.0
               for e in events) / len(events)


def score(task: str, reply: str, answer: dict[str, Any], reference: str) -> float:
    """The task's score of ``reply`` in [0, 1] (see the module table); 0 for anything malformed."""
    try:
        return _score(task, reply.replace("<|im_end|>", "").strip(), answer, reference)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError):
        return 0.0


def _score(task: str, reply: str, answer: dict[str, Any], reference: str) -> float:
    if task in ("visual_math", "text_reasoning"):
        return float("number" in answer and math_equal(reply, answer["number"]))
    reply = final_answer(reply)
    if task == "counting":
        value = first_number(reply)
        return float(value is not None and value == answer["count"])
    if task == "chart" and "number" in answer:
        value = first_number(reply)
        return float(value is not None and value == answer["number"])
    if task == "caption":
        return multiset_f1(objects(reply), objects(reference))
    if task == "grounding":
        return box_f1(parse_boxes(reply), parse_boxes(reference))
    if task == "mcq":
        return float(option_letter(reply) == answer["letter"])
    if task == "refcoco":
        boxes = parse_boxes(reply)
        if not boxes:
            return 0.0
        box = boxes[0]
        if answer.get("resized_size"):  # the model answers in the resized image's pixels
            (w, h), (rw, rh) = answer["image_size"], answer["resized_size"]
            box = [v * (w / rw if i % 2 == 0 else h / rh) for i, v in enumerate(box)]
        return float(iou(box, answer["bbox_2d"]) >= 0.5)
    if task == "vqa":
        return float(normalise(reply) in {normalise(a) for a in answer["answers"]})
    if task == "gui":
        return _gui(reply, answer, reference)
    if task == "video":
        return _video(reply, answer)
    if task == "ocr" and reference.lstrip().startswith("["):
        return _ocr_spotting(reply, reference)
    if task in ("ocr", "text"):
        return similarity(reply, reference)
    return float(normalise(reply) == normalise(reference))  # interleaved, chart labels, anything else


def _ocr_spotting(reply: str, reference: str) -> float:
    """Box F1 where a match also needs the same word."""
    try:
        predicted = [(r["bbox_2d"], r.get("text")) for r in json.loads(reply)]
    except (ValueError, TypeError, KeyError):
        return 0.0
    wanted = [(r["bbox_2d"], r["text"]) for r in json.loads(reference)]
    used, hits = set(), 0
    for box, text in predicted:
        for j, (ref_box, ref_text) in enumerate(wanted):
            if j not in used and text == ref_text and iou(box, ref_box) >= 0.5:
                used.add(j)
                hits += 1
                break
    return 2 * hits / (len(predicted) + len(wanted)) if predicted or wanted else 1.0
