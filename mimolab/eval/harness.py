"""Held-out evaluation on the synthetic world: batched generation with MiMo-VL's evaluation settings,
a score per task, and the chance level measured beside it.

Decoding follows MiMo-VL's report (sec. 4): greedy for image and video tasks; text-only tasks are
sampled at temperature 0.6, top-p 0.95 and, as the report's AIME avg@32, scored as the mean over
``text_samples`` samples of each prompt (``text_samples=0``: greedy for every task).

Held-out samples are world indices from ``HELD_OUT`` (10**6) on; training streams count from 0,
so the two never meet at any budget this workbench runs. Chance is measured, not assumed: it is
the score of the best *blind* answer, the one reference reply among the held-out samples that
scores highest when given to every sample. That is what a model that writes well-formed answers
while ignoring the image could get by always giving its most likely answer (for counts it is the
share of the most common count; for boxes, the box that happens to overlap most targets).

    rows = evaluate(model, processor, ["counting", "ocr"], n=40)   # list of TaskScore (mimolab.eval.results)
    print(scores_table(rows))
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from mimolab.data.world import TASKS, Difficulty, generate
from mimolab.eval.metrics import score
from mimolab.eval.results import TaskScore, mean_stderr
from mimolab.model.generation import generate as generate_tokens

HELD_OUT = 10**6
TEXT_SAMPLING = {"temperature": 0.6, "top_p": 0.95}  # MiMo-VL's text-task evaluation setting
TEXT_SAMPLES = 4  # samples per text-only prompt (avg@k)

METRICS = {"counting": "exact", "chart": "exact", "interleaved": "exact", "caption": "object F1",
           "ocr": "char similarity", "grounding": "box F1@0.5", "gui": "action hit", "video": "span IoU",
           "visual_math": "answer (math-verify)", "text_reasoning": "answer (math-verify)", "text": "char similarity",
           "mcq": "option letter", "refcoco": "acc@IoU0.5", "vqa": "exact (normalised)"}


@torch.no_grad()
def generate_replies(model, processor, samples: list, batch_size: int = 16, max_new_tokens: int | None = None,
                     thinking: bool = True, sampling: dict | None = None, seed: int = 0) -> list[str]:
    """Replies to each sample's user turn, in batches (left padding): greedy, or sampled with ``sampling``
    (``temperature``, ``top_p``; seeded by ``seed`` and the batch). ``thinking=False`` is MiMo-VL's
    no-think mode: the prompt ends with an empty think block."""
    tokenizer = processor.tokenizer
    model.eval()
    replies = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        prompts = [processor.apply_chat_template([m for m in s.messages if m["role"] == "user"], enable_thinking=thinking)
                   for s in batch]
        images = [im for s in batch for im in s.images]
        videos = [v for s in batch for v in s.videos]
        inputs = processor(prompts, images=images or None, videos=videos or None)
        inputs = {k: v.to(model.device) for k, v in inputs.items() if k != "mm_token_type_ids"}
        # room for the longest reference reply and then some: a model that rambles is cut, not waited for
        limit = max_new_tokens or 16 + int(1.5 * max(len(tokenizer(s.reply)["input_ids"]) for s in batch))
        decoding = {"do_sample": True, "seed": seed * 1_000_003 + start, **sampling} if sampling else {}
        out = generate_tokens(model, inputs.pop("input_ids"), inputs.pop("attention_mask"), tokenizer=tokenizer,
                              max_new_tokens=limit, **decoding, **inputs)
        replies += out.texts
    return replies


def best_blind_scores(task: str, samples: list) -> list[float]:
    """Per-sample scores of the single reference reply that, given to every sample, scores best."""
    candidates = {s.reply: None for s in samples}  # distinct answers, in order
    table = [[score(task, reply, s.answer, s.reply) for s in samples] for reply in candidates]
    return max(table, key=sum)


def held_out(task: str, n: int, *, seed: int = 0, difficulty: Difficulty = 0.5) -> list:
    """The first ``n`` held-out samples of ``task``: what ``evaluate`` scores."""
    return [generate(task, HELD_OUT + i, seed=seed, difficulty=difficulty) for i in range(n)]


def chance_levels(tasks: list[str], n: int, *, seed: int = 0, difficulty: Difficulty = 0.5) -> dict[str, float]:
    """Each task's chance on the held-out samples ``evaluate`` scores (same n, seed, difficulty): the
    best blind answer's mean score. Needs no model."""
    return {task: sum(best_blind_scores(task, held_out(task, n, seed=seed, difficulty=difficulty))) / n
            for task in tasks}


def with_view_size(sample, processor):
    """A benchmark sample's answer with ``resized_size``: the frame its boxes are answered in."""
    if "image_size" not in sample.answer or not sample.images:
        return sample.answer
    from mimolab.processing import resized_size

    return {**sample.answer, "resized_size": list(resized_size(sample.images[0], processor.image_processor))}


@torch.no_grad()
def score_samples(model, processor, task: str, samples: list, *, batch_size: int = 16, thinking: bool = True,
                  name: str | None = None, text_samples: int = TEXT_SAMPLES) -> TaskScore:
    """One task's score on ``samples`` (world or benchmark file), its chance and the per-sample scores.
    Samples without images or videos are scored as the mean of ``text_samples`` sampled replies."""
    if len(samples) < 2:
        raise ValueError("need at least 2 samples (a mean and its standard error)")
    answers = [with_view_size(s, processor) for s in samples]
    if text_samples and all(not s.images and not s.videos for s in samples):
        replies = [generate_replies(model, processor, samples, batch_size, thinking=thinking, sampling=TEXT_SAMPLING,
                                    seed=k) for k in range(text_samples)]
        per_seed = [[score(task, r, a, s.reply) for r, a, s in zip(batch, answers, samples)] for batch in replies]
        replies = [r for batch in replies for r in batch]
        scores = [sum(column) / text_samples for column in zip(*per_seed)]
        decoding = f"T{TEXT_SAMPLING['temperature']} p{TEXT_SAMPLING['top_p']} avg@{text_samples}"
    else:
        replies = generate_replies(model, processor, samples, batch_size, thinking=thinking)
        scores = [score(task, r, a, s.reply) for r, a, s in zip(replies, answers, samples)]
        decoding = "greedy"
    blind = best_blind_scores(task, samples)
    mean, _ = mean_stderr(scores)
    _, diff_err = mean_stderr([a - b for a, b in zip(scores, blind)])  # paired: same samples
    n = len(samples)
    tokenizer = getattr(processor, "tokenizer", None)  # None: a stand-in without one (tests of the scoring)
    length = sum(len(tokenizer(r)["input_ids"]) for r in replies) / len(replies) if tokenizer else None
    return TaskScore(name or task, METRICS.get(task, "score"), mean, diff_err, sum(blind) / n, n, scores,
                     "think" if thinking else "no_think", decoding, length)


def evaluate(model, processor, tasks: list[str] | None = None, *, n: int = 32, seed: int = 0,
             difficulty: Difficulty = 0.5, batch_size: int = 16, progress: bool = True,
             thinking: bool = True, text_samples: int = TEXT_SAMPLES) -> list[TaskScore]:
    """Score ``n`` held-out samples of each task (default: every world task) with MiMo-VL's decoding
    (module docstring); ``thinking=False``: MiMo-VL's no-think mode."""
    tasks = list(TASKS) if tasks is None else tasks
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise KeyError(f"unknown tasks {unknown}; choose from {sorted(TASKS)}")
    if n < 2:
        raise ValueError("n must be at least 2 (a mean and its standard error)")
    rows = []
    for task in tqdm(tasks, desc="evaluate", disable=not progress):
        samples = held_out(task, n, seed=seed, difficulty=difficulty)
        rows.append(score_samples(model, processor, task, samples, batch_size=batch_size, thinking=thinking,
                                  text_samples=text_samples))
    return rows


def examples(model, processor, task: str, n: int = 4, *, seed: int = 0, difficulty: Difficulty = 0.5) -> list[dict]:
    """``n`` held-out samples of ``task`` with the model's greedy reply, the reference and the score."""
    samples = held_out(task, n, seed=seed, difficulty=difficulty)
    replies = generate_replies(model, processor, samples)
    return [{"image": (s.images or [v[0] for v in s.videos] or [None])[0], "prompt": s.prompt, "reply": r,
             "reference": s.reply, "score": score(task, r, s.answer, s.reply)} for s, r in zip(samples, replies)]
