"""The JSONL record format of mimolab data: chat messages with image and video references, in the
conversation style of LLaVA / Qwen-VL fine-tuning sets, so your own data plugs in unchanged.

One record per line::

    {"id": "grounding-000003",
     "task": "grounding",                       # any name; the mixture's shares refer to it
     "messages": [
       {"role": "user", "content": [
          {"type": "image", "image": "images/grounding-000003.png"},     # relative to the JSONL file
          {"type": "text", "text": "Locate the small red circle ..."}]},
       {"role": "assistant", "content": [{"type": "text", "text": "[{\\"bbox_2d\\": [12, 30, 40, 58], ...}]"}]}],
     "answer": {"bbox_2d": [12, 30, 40, 58], "label": "small red circle",    # what a reward needs
                "boxes": [{"bbox_2d": [12, 30, 40, 58], "label": "small red circle"}]},
     "meta": {...}}                             # what was drawn; index, seed, difficulty

Videos: ``{"type": "video", "video": "videos/<id>/", "fps": 2}``: a folder of frames (PNG/JPEG, in
name order), or a .gif / .mp4 file (mp4 needs a decoder such as imageio[pyav]). ``content`` may
also be a plain string. Only ``messages`` is required; ``task`` defaults to the source name.

Media file names: a sample's first image is ``images/<id>.png``, further ones (interleaved pages)
``images/<id>-1.png``, ``images/<id>-2.png`` ...; videos likewise ``videos/<id>/``, frames
``0000.png``, ``0001.png`` ... recorded at ``fps``.

``answer`` holds what the task's reward needs (boxes in absolute pixels, x2/y2 exclusive):

| answer | tasks | reward it serves |
|---|---|---|
| ``{"count": 3}`` | counting | exact match |
| ``{"boxes": [{"bbox_2d": [x1, y1, x2, y2], "label": ...}, ...]}`` (1) | grounding, gui 'ground' | GIoU |
| ``{"action": "click", "point": [x, y], "target": ..., "bbox_2d": [...]}`` | gui | point in box |
| ``{"action": "type", "text": ..., "target": ..., "bbox_2d": [...]}`` | gui | exact match |
| ``{"span": [t0, t1], "label": ...}`` (seconds) (2) | video | IoU of spans |
| ``{"number": 12}`` | visual_math, text_reasoning, chart | math-verify on ``\\boxed{}`` / exact |
| ``{"text": ...}`` (OCR also ``boxes`` with ``text``) | caption, interleaved, ocr, chart, text | match / reward model |

(1) with one target also ``bbox_2d`` and ``label`` at the top level. (2) video captions instead
hold ``{"text": ..., "events": [{"span": [t0, t1], "label": ...}, ...]}``.

Reasoning records put the long chain of thought in the assistant turn (``<think>\\n...\\n</think>
\\n\\nThe answer is \\boxed{N}.``) and the short version in ``meta["short_reply"]``.

Bring your own data: write one such line per example into ``<name>.jsonl`` next to its
``images/`` (and ``videos/``) folder; paths may also be absolute. ``read_jsonl(path)`` yields the
records with paths resolved against the file's folder without opening any image, skipping and counting
each line that is not such a record (``parse_line`` and ``check_record`` say why: the one reading of
a line, which the training stream ``mimolab.data.sources.jsonl_source`` shares);
``load_media(record)`` returns a copy with PIL images and frame lists in place of the paths;
``write_jsonl(samples, out_dir, name)`` writes world samples in this format.
Reading and writing never import torch; ``load_media`` does (through ``mimolab.processing``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from mimolab.data.mixture import BadRecord, SkipCounter
from mimolab.data.world.scene import Sample


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _suffix(n: int) -> str:
    """'' for a sample's first image (or video), '-1', '-2' ... for the next ones."""
    return "" if n == 0 else f"-{n}"


def to_record(sample: Sample, sample_id: str, out_dir: Path) -> dict:
    """Save a sample's images/frames under out_dir and return its JSONL record (relative paths)."""
    messages, n_images, n_videos = [], 0, 0
    for message in sample.messages:
        content = message["content"]
        if isinstance(content, list):
            items = []
            for item in content:
                item = dict(item)
                if item.get("type") == "image":
                    rel = f"images/{sample_id}{_suffix(n_images)}.png"
                    (out_dir / "images").mkdir(parents=True, exist_ok=True)
                    item["image"].save(out_dir / rel)
                    item["image"], n_images = rel, n_images + 1
                elif item.get("type") == "video":
                    rel = f"videos/{sample_id}{_suffix(n_videos)}/"
                    (out_dir / rel).mkdir(parents=True, exist_ok=True)
                    for i, frame in enumerate(item["video"]):
                        frame.save(out_dir / rel / f"{i:04d}.png")
                    item["video"], n_videos = rel, n_videos + 1
                items.append(item)
            content = items
        messages.append({"role": message["role"], "content": content})
    return {"id": sample_id, "task": sample.task, "messages": messages, "answer": _jsonable(sample.answer),
            "meta": _jsonable(sample.meta)}


def write_jsonl(samples: Iterable[Sample], out_dir: str | Path, name: str | None = None) -> Path:
    """Write ``<out_dir>/<name>.jsonl`` and the images/frames it refers to; returns the file.
    ``name`` defaults to the first sample's task (``data`` when there are no samples)."""
    samples = iter(samples)
    first = next(samples, None)
    name = name or (first.task if first is not None else "data")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.jsonl"
    with path.open("w") as f:
        for i, sample in enumerate(itertools.chain([first] if first is not None else [], samples)):
            f.write(json.dumps(to_record(sample, f"{name}-{i:06d}", out_dir)) + "\n")
    return path


def parse_line(line: bytes | str) -> dict:
    """One JSONL line as a record, or ``BadRecord`` naming why not: not UTF-8, empty, not JSON, or JSON
    that is not an object (``null``, a list, a number). Decoded line by line, so one bad byte never
    costs the lines around it."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8-sig")  # (-sig: a byte-order mark some editors put before line 1)
        except UnicodeDecodeError as err:
            raise BadRecord("not UTF-8", f"byte {err.start}: {line[max(0, err.start - 20):err.start + 20]!r}") from None
    if not line.strip():
        raise BadRecord("empty line")
    try:
        record = json.loads(line)
    except ValueError:
        raise BadRecord("not JSON", line[:80]) from None
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object", f"a JSON {type(record).__name__}: {line[:80]}")
    return record


def _is_media(value: Any, kind: str) -> bool:
    """A path (non-empty string), an in-memory image or array; for a video also a list of frames."""
    if isinstance(value, str):
        return bool(value.strip())
    if kind == "video" and isinstance(value, list):
        return bool(value) and all(_is_media(frame, "image") for frame in value)
    return value is not None and not isinstance(value, (bool, int, float, dict, list))


def _check_item(item: Any) -> None:
    if not isinstance(item, dict):
        raise BadRecord("content item not an object", repr(item)[:80])
    kind = item.get("type") or ("image" if "image" in item else "video" if "video" in item else "text")
    if kind == "text":
        if not isinstance(item.get("text"), str):
            raise BadRecord("text not a string", repr(item)[:80])
    elif kind in ("image", "video"):
        if item.get(kind) is None:
            raise BadRecord(f"{kind} without a path", repr(item)[:80])
        if not _is_media(item[kind], kind):
            raise BadRecord(f"{kind} not a path", repr(item)[:80])
        fps = item.get("fps", 1)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise BadRecord("fps not a positive number", repr(item)[:80])
    else:
        raise BadRecord("unknown content type", repr(kind)[:80])


def check_record(record: Any) -> None:
    """Raise ``BadRecord`` (a reason the mixture counts) for a record that is not the format above:
    not an object, no ``messages`` list, a message that is not ``{"role": str, "content": str | list}``,
    an item that is not text, image or video with a value of the right type, a ``task`` that is not a
    string. Media files are not opened here (the tokenizer does that)."""
    if isinstance(record, BadRecord):
        raise record  # a line the reader could not parse
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object", type(record).__name__)
    if "task" in record and not (isinstance(record["task"], str) and record["task"]):
        raise BadRecord("task not a string", repr(record["task"])[:80])
    messages = record.get("messages")
    if messages is None or messages == []:
        raise BadRecord("no messages")
    if not isinstance(messages, list):
        raise BadRecord("messages not a list", type(messages).__name__)
    for message in messages:
        if not isinstance(message, dict):
            raise BadRecord("message not an object", repr(message)[:80])
        if not isinstance(message.get("role"), str):
            raise BadRecord("role not a string", repr(message)[:80])
        content = message.get("content")
        if isinstance(content, list):
            for item in content:
                _check_item(item)
        elif not isinstance(content, str):
            raise BadRecord("content not a string or list", repr(message)[:80])


def read_jsonl(path: str | Path, skips: SkipCounter | None = None) -> Iterator[dict]:
    """The good records of a JSONL file, media paths made absolute (relative to the file's folder);
    media is not loaded (see ``load_media``). A bad line (``parse_line``, ``check_record``) is skipped
    and counted in ``skips`` (a ``SkipCounter``, which logs the first few of each reason)."""
    path = Path(path)
    skips = skips if skips is not None else SkipCounter()
    with path.open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = parse_line(line)
                check_record(record)
            except BadRecord as err:
                skips.skip(str(path), err)
                continue
            for message in record["messages"]:
                if isinstance(message["content"], list):
                    for item in message["content"]:
                        kind = item.get("type")
                        if kind in ("image", "video") and isinstance(item.get(kind), str):
                            item[kind] = str(path.parent / item[kind])
            yield record


def load_media(record: dict) -> dict:
    """The record with images as PIL images and videos as lists of frames."""
    from mimolab.processing import load_image, load_video

    record = json.loads(json.dumps(record))  # a deep copy
    for message in record["messages"]:
        if isinstance(message["content"], list):
            for item in message["content"]:
                if item.get("type") == "image":
                    item["image"] = load_image(item["image"])
                elif item.get("type") == "video":
                    fps = item.get("fps", 2)
                    item["video"] = load_video(item["video"], fps=fps, source_fps=fps)
    return record
