"""Per-task scores in [0, 1] for the synthetic world's answers (and real data in the same format).

One function, ``score(task, reply, answer, reference)``: ``answer`` is the sample's reference dict
(count, number, bbox_2d/boxes, span/events, action...), ``reference`` its reference reply text.
Every score is partial-credit where the task allows it, so a small model's progress shows before
it is perfect. Replies are read by ``mimolab.eval.answers`` (the parsers the RL rewards and the demo
share), which forgive surrounding text: a model that writes "There are 3." for a count of 3 scores 1.
A malformed reply scores 0, never raises.

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

from mimolab.eval.answers import (
    final_answer,
    objects,
    option_letter,
    parse_boxed,
    parse_boxes,
    parse_click,
    parse_events,
    parse_json_list,
    parse_number,
    parse_span,
    parse_typed,
)


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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


def span_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


def multiset_f1(predicted: dict[str, int], reference: dict[str, int]) -> float:
    hits = sum(min(n, reference.get(k, 0)) for k, n in predicted.items())
    total = sum(predicted.values()) + sum(reference.values())
    return 2 * hits / total if total else 1.0


def math_equal(reply: str, number: float) -> bool:
    """math-verify on the final answer (boxed or plain); a plain number comparison when it finds none."""
    answer = final_answer(reply)
    boxed = parse_boxed(answer)
    try:
        from math_verify import parse, verify

        parsed = parse(f"${boxed}$" if boxed is not None else answer)
        if parsed:
            return bool(verify(parse(f"${number:g}$"), parsed))
    except Exception:  # math-verify's own time limit or a parse failure: fall back to the plain reading
        pass
    value = parse_number(boxed if boxed is not None else answer)
    return value is not None and abs(value - number) < 1e-6


def point_in_box(point: tuple[float, float], box: list[float]) -> bool:
    """A click at ``point`` hits ``box`` (x1, y1 inclusive; x2, y2 exclusive, as pixels are)."""
    x1, y1, x2, y2 = box
    return x1 <= point[0] < x2 and y1 <= point[1] < y2


def _gui(reply: str, answer: dict, reference: str) -> float:
    action = answer.get("action")
    if action == "click":
        point = parse_click(reply)
        return float(point is not None and point_in_box(point, answer["bbox_2d"]))
    if action == "type":
        typed = parse_typed(reply)
        return float(typed is not None and typed == parse_typed(reference))
    boxes = parse_boxes(reply)
    return float(bool(boxes) and iou(boxes[0], answer["bbox_2d"]) >= 0.5)


def _video(reply: str, answer: dict) -> float:
    if "span" in answer:
        span = parse_span(reply)
        return span_iou(span, tuple(answer["span"])) if span else 0.0
    predicted = parse_events(reply)
    events = answer.get("events", [])
    if not events:
        return float(not predicted)
    return sum(span_iou(predicted[e["label"]], tuple(e["span"])) if e["label"] in predicted else 0.0
               for e in events) / len(events)


def score(task: str, reply: str, answer: dict[str, Any], reference: str) -> float:
    """The task's score of ``reply`` in [0, 1] (see the module table); 0 for anything malformed."""
    try:
        return _score(task, reply, answer, reference)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError):
        return 0.0


def _score(task: str, reply: str, answer: dict[str, Any], reference: str) -> float:
    if task in ("visual_math", "text_reasoning"):
        return float("number" in answer and math_equal(reply, answer["number"]))
    reply = final_answer(reply)
    if task == "counting":
        value = parse_number(reply)
        return float(value is not None and value == answer["count"])
    if task == "chart" and "number" in answer:
        value = parse_number(reply)
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
    predicted = [(r["bbox_2d"], r.get("text")) for r in parse_json_list(reply) if "bbox_2d" in r]
    wanted = [(r["bbox_2d"], r["text"]) for r in json.loads(reference)]
    used, hits = set(), 0
    for box, text in predicted:
        for j, (ref_box, ref_text) in enumerate(wanted):
            if j not in used and text == ref_text and iou(box, ref_box) >= 0.5:
                used.add(j)
                hits += 1
                break
    return 2 * hits / (len(predicted) + len(wanted)) if predicted or wanted else 1.0
