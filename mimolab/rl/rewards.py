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
| grounding | GIoU of the predicted and reference box, mapped to [0, 1] as (GIoU + 1) / 2 |
| gui | click inside the target box (point-in-box), typed text, grounded box GIoU |
| counting | exact count |
| video | IoU of time spans, in seconds or ``[mm:ss, mm:ss]`` |
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

Every call runs under a time limit (sympy inside math-verify can hang on hostile input): the work
happens in a worker process that is killed after ``timeout`` seconds, and the sample scores 0 with
the reason ``timeout``. The worker is started with ``spawn`` (safe beside torch's threads), so a
script that calls rewards needs the usual ``if __name__ == "__main__":`` guard; notebooks do not.
``close()`` (or leaving ``with reward:``) ends the worker; one left open ends with the interpreter, or
with its owner's process however that ends (``mimolab.rl.processes``).
"""

from __future__ import annotations

import multiprocessing as mp
import re
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mimolab.eval.answers import final_answer, parse_boxes, parse_click, parse_number, parse_span, parse_typed
from mimolab.eval.metrics import math_equal, point_in_box, score, span_iou
from mimolab.rl.processes import kill_pool, worker_pool


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or TRL's list of messages (the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def giou(a: list[float], b: list[float]) -> float:
    """Generalised IoU in [-1, 1]: IoU minus the share of the enclosing box that neither covers."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    if union <= 0 or hull <= 0:
        return -1.0
    return inter / union - (hull - union) / hull


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
    reference = sample["answer"]["bbox_2d"]
    return (giou(to_original(boxes[0], sample), reference) + 1) / 2, None


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


def _warm_up() -> None:
    import math_verify  # noqa: F401  (sympy: the slow import)


class Reward:
    """A TRL-compatible reward over the tasks in ``tasks`` (None for other tasks' samples)."""

    def __init__(self, name: str, tasks: tuple[str, ...] | None = None, *, scorer: str | None = None,
                 timeout: float = 5.0) -> None:
        self.__name__ = name  # TRL logs rewards under their function's name
        self.tasks, self.scorer, self.timeout = tasks, scorer, timeout
        self.last_reasons: list[str | None] = []
        self._pool: ProcessPoolExecutor | None = None
        self._end_pool: weakref.finalize | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # a process of its own, so a hung sympy call can be killed
            self._pool = worker_pool(mp.get_context("spawn"))
            # a Reward nobody closes still ends its worker: when collected, or at interpreter exit
            self._end_pool = weakref.finalize(self, kill_pool, self._pool)
            self._pool.submit(_warm_up).result()  # start-up and imports do not count against the time limit
        return self._pool

    def _kill_pool(self) -> None:
        if self._end_pool is not None:
            self._end_pool()  # runs kill_pool once; later calls do nothing
        self._pool = self._end_pool = None

    def __call__(self, completions: list, task: list[str] | None = None, answer: list[dict] | None = None,
                 **columns: list) -> list[float | None]:
        n = len(completions)
        task = task or [None] * n
        values: list[float | None] = []
        self.last_reasons = []
        for i, completion in enumerate(completions):
            if self.tasks is not None and task[i] not in self.tasks:
                values.append(None)
                self.last_reasons.append(None)
                continue
            sample = {"answer": (answer or [{}] * n)[i],  # plain columns only: they travel to the worker process
                      **{k: v[i] for k, v in columns.items() if isinstance(v, list) and k != "samples"}}
            try:
                reply = completion_text(completion)
                future = self._executor().submit(_score_one, task[i], reply, sample, self.scorer)
                value, reason = future.result(timeout=self.timeout)
            except FutureTimeout:
                self._kill_pool()
                value, reason = 0.0, f"timeout after {self.timeout:g} s"
            except TypeError as err:
                value, reason = 0.0, str(err)
            values.append(value)
            self.last_reasons.append(reason)
        return values

    def close(self) -> None:
        self._kill_pool()

    def __enter__(self) -> "Reward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def default_rewards(timeout: float = 5.0, format_reward: bool = False) -> list[Reward]:
    """MiMo-VL's verifiable rewards (no format reward unless asked: MiMo-VL used none)."""
    rewards = [Reward("accuracy", ("visual_math", "text_reasoning"), timeout=timeout),
               Reward("grounding", ("grounding",), timeout=timeout), Reward("gui_action", ("gui",), timeout=timeout),
               Reward("counting", ("counting",), timeout=timeout), Reward("temporal_iou", ("video",), timeout=timeout),
               Reward("chart", ("chart",), timeout=timeout), Reward("ocr", ("ocr",), timeout=timeout),
               Reward("interleaved", ("interleaved",), timeout=timeout)]
    if format_reward:
        rewards.append(Reward("format", None, scorer="format", timeout=timeout))
    return rewards


__all__ = ["Reward", "SCORERS", "completion_text", "default_rewards", "giou", "to_original"]
