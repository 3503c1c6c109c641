"""Verifiable rewards of MiMo-VL's RL stage, in TRL's reward-function signature.

Each reward is called as ``reward(completions, **columns)`` (``completions``: strings, or TRL's
conversational ``[[{"role": "assistant", "content": ...}]]``; ``columns``: per-sample lists such as
``task``, ``answer``, ``image_size``) and returns one float in [0, 1] per completion, or None for a
sample that is not its task. So a mimolab reward plugs into TRL's GRPOTrainer, and a TRL-style
reward plugs into mimolab's GRPO. After a call, ``reward.last_reasons`` says why each completion
scored 0 (None where it did not). The chart, OCR and interleaved rewards are mimolab's, for the world's
tasks of those kinds: MiMo-VL's report lists no RL task for them.

| task | reward |
|---|---|
| visual_math, text_reasoning | math-verify on the final answer after ``</think>`` (boxed or plain) |
| grounding | GIoU of the box (clipped to the image) and the reference, mapped to [0, 1] by ``box_reward`` |
| gui | click inside the target box (point-in-box), typed text, grounded box GIoU |
| counting | exact count |
| video | IoU of time spans, in seconds, ``[mm:ss, mm:ss]`` or words ("from 2 to 6 seconds") |
| chart | exact value, or the named bar or row |
| ocr | character similarity to the text read (1 - edit distance / length), or word-box F1 for text spotting |
| interleaved | exact answer (the shape in image k, or which image shows an object) |
| format (off by default) | thinking tags well formed: one ``<think>`` ... ``</think>`` before the answer |

Replies are read by ``mimolab.eval.answers``, the parsers the evaluation metric uses, so a reward
finds the same number, box, click or span in a reply as the evaluation that MORL's before/after is
scored by; where both give exact credit (counting, chart, clicks, typing, OCR, interleaved, math)
they give the same value.

Qwen2.5-VL answers in absolute pixels of the image *as resized by the processor*. When a sample
carries ``image_size`` (the original width, height) and ``resized_size`` (what the model saw), a
predicted box or point is rescaled to the original frame before it is compared.

A reference that cannot be scored against (``count: "3"``, an inverted box) raises ``ValueError``
naming the column and row (``mimolab.rl.references``); a completion of a shape no reward can read
scores 0 with the reason, as does a reply with nothing to read in it.

Every completion is scored under a time limit (sympy inside math-verify can hang on hostile input):
the work happens in a worker process (``mimolab.rl.processes.WorkerPool``) that is killed after
``timeout`` seconds, and the sample scores 0 with the reason ``timeout``; a call's completions run in
parallel on up to ``workers`` processes, and one that hangs holds up only its own process. Workers
are forked from a fork server that has imported sympy once (``spawn`` where there is none: a script
then needs the usual ``if __name__ == "__main__":`` guard). ``close()`` (or leaving ``with reward:``)
ends the workers; ones left open end with the interpreter, or with their owner's process however that
ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mimolab.eval.answers import final_answer, parse_boxes, parse_click, parse_number, parse_span, parse_typed
from mimolab.eval.metrics import math_equal, point_in_box, score, span_iou
from mimolab.rl.processes import WorkerPool
from mimolab.rl.references import check_reference, image_frame, shape


def completion_text(completion: Any) -> str:
    """A completion as text, in any shape TRL passes: a string; a list of messages (the last one's
    content) or one message; content as a string, None, or a list of parts (strings, or
    ``{"type": "text", "text": ...}``; image parts are skipped). ``TypeError`` for anything else."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, list):
        if not completion:
            return ""
        if isinstance(completion[-1], dict):
            return _content_text(completion[-1].get("content"))
        if all(isinstance(piece, str) for piece in completion):
            return " ".join(completion)
    raise TypeError(f"a completion must be a string or a list of messages, got {shape(completion)}")


def _content_text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TypeError(f"a message's content must be a string or a list of parts, got {shape(content)}")
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif not (isinstance(part, dict) and part.get("type") not in (None, "text")):  # an image part: no text
            raise TypeError(f"a content part must be a string or {{'type': 'text', 'text': ...}}, got {shape(part)}")
    return " ".join(texts)


def _area(r: list[float]) -> float:
    return max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])


def _overlap(a: list[float], b: list[float]) -> float:
    return _area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])


def giou(a: list[float], b: list[float]) -> float:
    """Generalised IoU in [-1, 1]: IoU minus the share of the enclosing box that neither covers."""
    inter = _overlap(a, b)
    union = _area(a) + _area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if union <= 0 or hull <= 0:
        return -1.0
    return inter / union - (hull - union) / hull


def box_reward(predicted: list[float], reference: list[float], frame: tuple[float, float] | None = None) -> float:
    """A predicted box's reward in [0, 1] against a valid reference box (both in the frame's pixels).

    The predicted box is clipped to the image ``frame`` (width, height); then the reward is
    ``(1 - c) * (GIoU + 1) / 2 + c * IoU``, where ``c`` is the share of the image outside the reference
    that the prediction covers. Plain ``(GIoU + 1) / 2`` gives a box over the whole image 0.5 or more
    (its enclosing box is itself, so GIoU = IoU), as much as a near miss; here a box that claims the
    whole image (c = 1) earns exactly its IoU, the reference's share of the image, while a box that
    claims little background keeps GIoU's graded credit for coming close. The order, for a reference
    well inside the image (tested): exact (1) > overlapping > near miss (the same size, just beside it)
    > far miss (the same size, across the image) > the whole image (its IoU) > an empty box (0).
    Without a frame the box is only clipped at 0 and the reward is ``(GIoU + 1) / 2``."""
    width, height = frame if frame is not None else (float("inf"), float("inf"))
    box = [min(max(float(v), 0.0), width if i % 2 == 0 else height) for i, v in enumerate(predicted)]
    if box[2] <= box[0] or box[3] <= box[1]:
        return 0.0
    shaped = (giou(box, reference) + 1) / 2
    if frame is None:
        return shaped
    inter = _overlap(box, reference)
    background = width * height - _overlap(reference, [0, 0, width, height])
    claimed = min(1.0, max(0.0, (_area(box) - inter) / background)) if background > 0 else 0.0
    iou = inter / (_area(box) + _area(reference) - inter)
    return (1 - claimed) * shaped + claimed * iou


def to_original(values: list[float], sample: dict) -> list[float]:
    """x, y (or x1, y1, x2, y2) from the resized image's pixels to the original image's."""
    if not sample.get("image_size") or not sample.get("resized_size"):
        return values
    (w, h), (rw, rh) = sample["image_size"], sample["resized_size"]
    return [v * (w / rw if i % 2 == 0 else h / rh) for i, v in enumerate(values)]


# each scorer: (reply, sample) -> (value, reason); reason None when the reply was well formed
def _math(reply: str, sample: dict) -> tuple[float, str | None]:
    answer = sample["answer"]
    if "number" not in answer:
        return 0.0, "no reference number"
    if "</think>" in reply and not final_answer(reply):
        return 0.0, "nothing after </think>"
    return float(math_equal(reply, answer["number"])), None


def _grounding(reply: str, sample: dict) -> tuple[float, str | None]:
    boxes = parse_boxes(final_answer(reply))
    if not boxes:
        return 0.0, "no box"
    reference = _reference_box(sample["answer"])
    if reference is None:
        return 0.0, "the reference has several boxes: this reward scores one"
    box = to_original(boxes[0], sample)
    if box[2] <= box[0] or box[3] <= box[1]:
        return 0.0, "the box is empty or inverted (x2 <= x1 or y2 <= y1)"
    return box_reward(box, reference, sample.get("frame")), None


def _reference_box(answer: dict) -> list[float] | None:
    """The one reference box: ``bbox_2d``, or the only entry of ``boxes``."""
    if "bbox_2d" in answer:
        return answer["bbox_2d"]
    return answer["boxes"][0]["bbox_2d"] if len(answer["boxes"]) == 1 else None


def _gui(reply: str, sample: dict) -> tuple[float, str | None]:
    answer, reply = sample["answer"], final_answer(reply)
    if answer["action"] == "click":
        point = parse_click(reply)
        if point is None:
            return 0.0, "no click(x, y)"
        return float(point_in_box(to_original(list(point), sample), answer["bbox_2d"])), None
    if answer["action"] == "type":
        typed = parse_typed(reply)
        if typed is None:
            return 0.0, 'no type("...")'
        return float(typed == answer.get("text")), None
    return _grounding(reply, sample)


def _exact_number(reply: str, wanted: float) -> tuple[float, str | None]:
    """1 when the final answer's first number is ``wanted``, as the evaluation reads it ('There are 3.',
    '3.0' and '3 objects' are all 3)."""
    value = parse_number(final_answer(reply))
    if value is None:
        return 0.0, "no number"
    return float(value == wanted), None


def _counting(reply: str, sample: dict) -> tuple[float, str | None]:
    return _exact_number(reply, sample["answer"]["count"])


def _chart(reply: str, sample: dict) -> tuple[float, str | None]:
    answer = sample["answer"]
    if "number" not in answer:  # which bar or row: the label itself
        return score("chart", reply, answer, answer["text"]), None
    return _exact_number(reply, answer["number"])


def _ocr(reply: str, sample: dict) -> tuple[float, str | None]:
    """The evaluation's OCR score: against the reference reply (``reference`` column) where given, which
    text spotting needs; else against the text to read."""
    return score("ocr", reply, sample["answer"], sample.get("reference") or sample["answer"]["text"]), None


def _interleaved(reply: str, sample: dict) -> tuple[float, str | None]:
    """The evaluation's exact match against the reference reply ('A circle.', 'Image 2.')."""
    if not sample.get("reference"):
        return 0.0, "interleaved needs the reference reply (column 'reference')"
    return score("interleaved", reply, sample["answer"], sample["reference"]), None


def _video(reply: str, sample: dict) -> tuple[float, str | None]:
    if "span" not in sample["answer"]:  # a timestamped caption: mean IoU of each event's span
        return score("video", reply, sample["answer"], sample.get("reference", "")), None
    span = parse_span(final_answer(reply))
    if span is None:
        return 0.0, "no [start, end] span"
    return span_iou(span, tuple(sample["answer"]["span"])), None


def _format(reply: str, sample: dict) -> tuple[float, str | None]:
    ok = re.fullmatch(r"\s*<think>(?:(?!</?think>).)*</think>(?:(?!</?think>).)*\S(?:(?!</?think>).)*", reply, re.S)
    return (1.0, None) if ok else (0.0, "thinking tags not well formed")


SCORERS: dict[str, Callable[[str, dict], tuple[float, str | None]]] = {
    "visual_math": _math, "text_reasoning": _math, "grounding": _grounding, "gui": _gui,
    "counting": _counting, "video": _video, "chart": _chart, "ocr": _ocr,
    "interleaved": _interleaved,
}


def _score_one(task: str, reply: str, sample: dict, scorer: str | None) -> tuple[float, str | None]:
    fn = SCORERS.get(task) if scorer is None else {"format": _format}[scorer]
    if fn is None:
        return 0.0, f"no reward for task {task!r}"
    if scorer is None and "<think>" in reply and "</think>" not in reply:
        return 0.0, "<think> never closed: no final answer"
    try:
        value, reason = fn(reply, sample)
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as err:
        return 0.0, f"malformed: {type(err).__name__}"
    return min(1.0, max(0.0, float(value))), reason


PRELOAD = ("math_verify", "mimolab.rl.rewards")  # what a worker imports before its first call (sympy: seconds)


# ------------------------------------------------------------------------------------ the reward
class Reward:
    """A TRL-compatible reward over the tasks in ``tasks`` (None for other tasks' samples).

    Completions are scored in a ``WorkerPool`` of up to ``workers`` processes (or the ``pool`` given,
    which ``default_rewards`` shares between its rewards), all of a call's completions at once, each
    under the time limit; concurrent calls from several threads share the pool."""

    def __init__(self, name: str, tasks: tuple[str, ...] | None = None, *, scorer: str | None = None,
                 timeout: float = 5.0, workers: int = 1, pool: WorkerPool | None = None) -> None:
        self.__name__ = name  # TRL logs rewards under their function's name
        self.tasks, self.scorer, self.timeout = tasks, scorer, timeout
        self.last_reasons: list[str | None] = []
        self.pool = pool or WorkerPool(workers, preload=PRELOAD)

    def __call__(self, completions: list, **columns: list) -> list[float | None]:
        values, self.last_reasons = self.values_and_reasons(completions, **columns)
        return values

    def values_and_reasons(self, completions: list, task: list[str] | None = None, answer: list | None = None,
                           **columns: list) -> tuple[list[float | None], list[str | None]]:
        """The values and the reasons for zeros of one call (what ``__call__`` returns and keeps in
        ``last_reasons``; this form is safe to call from several threads at once)."""
        n = len(completions)
        task, answer = task or [None] * n, answer if answer is not None else [{}] * n
        for name, column in (("task", task), ("answer", answer)):
            if not isinstance(column, list) or len(column) != n:
                raise ValueError(f"column {name!r} must be a list of {n} entries (one per completion), got "
                                 f"{type(column).__name__} of {len(column) if isinstance(column, list) else 1}")
        plain = {k: v for k, v in columns.items() if isinstance(v, list) and k not in ("samples", "image", "images")}
        pending: dict[int, Any] = {}
        values: list[float | None] = [None] * n
        reasons: list[str | None] = [None] * n
        rows = [i for i in range(n) if self.tasks is None or task[i] in self.tasks]
        for i in rows if self.scorer is None else ():  # every reference checked before any is scored
            check_reference(task[i], answer[i], columns, i)
        for i in rows:
            try:
                reply = completion_text(completions[i])
            except TypeError as err:
                values[i], reasons[i] = 0.0, str(err)
                continue
            # plain columns only: they travel to the worker process
            sample = {"answer": answer[i], "frame": image_frame(columns, i), **{k: v[i] for k, v in plain.items()}}
            pending[i] = self.pool.submit(_score_one, task[i], reply, sample, self.scorer, timeout=self.timeout)
        for i, future in pending.items():
            try:
                values[i], reasons[i] = future.result()
            except TimeoutError:
                values[i], reasons[i] = 0.0, f"timeout after {self.timeout:g} s"
            except RuntimeError as err:  # the worker died under it (or the pool was closed): this sample only
                values[i], reasons[i] = 0.0, str(err)
        return values, reasons

    def close(self) -> None:
        """End the worker processes (a later call starts them again)."""
        self.pool.close()

    def __enter__(self) -> "Reward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_rewards(timeout: float = 5.0, format_reward: bool = False, workers: int = 1) -> list[Reward]:
    """MiMo-VL's verifiable rewards (no format reward unless asked: MiMo-VL used none), sharing one pool
    of up to ``workers`` processes (closing any of them ends it; the next call starts it again)."""
    pool = WorkerPool(workers, preload=PRELOAD)
    names = {"accuracy": ("visual_math", "text_reasoning"), "grounding": ("grounding",), "gui_action": ("gui",),
             "counting": ("counting",), "temporal_iou": ("video",), "chart": ("chart",), "ocr": ("ocr",),
             "interleaved": ("interleaved",)}
    rewards = [Reward(name, tasks, timeout=timeout, pool=pool) for name, tasks in names.items()]
    if format_reward:
        rewards.append(Reward("format", None, scorer="format", timeout=timeout, pool=pool))
    return rewards


__all__ = ["Reward", "SCORERS", "box_reward", "completion_text", "default_rewards", "giou", "to_original"]
