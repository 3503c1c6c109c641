"""Standard benchmark files a user already has on disk, read into the world's ``Sample`` form so the
same harness and metrics score them.

| format | file | fields | task | metric |
|---|---|---|---|---|
| multiple choice (MMMU / MMBench style) | .jsonl, .tsv | ``question``, options as a list (``options``/``choices``) or columns ``A``..``J``, ``answer`` (a letter), ``image`` (path or base64) | ``mcq`` | the letter |
| RefCOCO style | .jsonl, .json | ``image``, the expression (``expression``/``sent``/``refexp``), ``bbox`` [x, y, w, h] in the image's pixels | ``refcoco`` | IoU >= 0.5 |
| VQA | .jsonl | ``image``, ``question``, ``answer`` or ``answers`` (a list) | ``vqa`` | normalised exact match with any answer |

The format is read off the first record's fields. Image paths are relative to the file's folder
(or ``image_root``). A record that cannot be used (no image file, a line that is not JSON, a field
missing) is skipped and counted per reason; ``load_benchmark`` logs the counts and returns them.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from mimolab.data.world.scene import Sample

log = logging.getLogger(__name__)
LETTERS = "ABCDEFGHIJ"
EXPRESSION_KEYS = ("expression", "sent", "refexp", "referring_expression")


def _records(path: Path) -> list[tuple[int, dict | None]]:
    """(line number, record or None for an unreadable line)."""
    text = path.read_text()
    if path.suffix == ".tsv":
        return [(i + 2, row) for i, row in enumerate(csv.DictReader(io.StringIO(text), delimiter="\t"))]
    if path.suffix == ".json":
        data = json.loads(text)
        return list(enumerate(data if isinstance(data, list) else data.get("data", []), 1))
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except ValueError:
                out.append((i, None))
    return out


def _image(value: Any, root: Path) -> Image.Image:
    """An image from a path (relative to ``root``) or base64 text (MMBench's TSV files embed them)."""
    if not isinstance(value, str) or not value:
        raise KeyError("image")
    path = Path(value) if Path(value).is_absolute() else root / value
    if len(value) < 1024 and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"):
        if not path.exists():
            raise FileNotFoundError(path)
        return Image.open(path).convert("RGB")
    try:
        return Image.open(io.BytesIO(base64.b64decode(value, validate=True))).convert("RGB")
    except (binascii.Error, OSError) as err:
        raise ValueError("image is neither a file nor base64") from err


def detect_format(record: dict) -> str:
    if "bbox" in record and any(k in record for k in EXPRESSION_KEYS):
        return "refcoco"
    if "options" in record or "choices" in record or ("A" in record and "B" in record):
        return "mcq"
    if "question" in record and ("answer" in record or "answers" in record):
        return "vqa"
    raise ValueError(f"cannot tell the benchmark format from the fields {sorted(record)}: see mimolab.eval.benchmarks")


def _user(image: Image.Image, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _mcq(record: dict, image: Image.Image) -> Sample:
    options = record.get("options") or record.get("choices")
    if isinstance(options, str):
        options = json.loads(options)
    if not options:
        options = [record[k] for k in LETTERS if record.get(k) not in (None, "", "nan")]
    letter = str(record["answer"]).strip().upper()[:1]
    if letter not in LETTERS[: len(options)]:
        raise ValueError("answer is not one of the option letters")
    lines = [str(record["question"])] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    lines.append("Answer with the option's letter from the given choices directly.")
    return Sample("mcq", [_user(image, "\n".join(lines)), _assistant(letter)], {"letter": letter},
                  {"options": [str(o) for o in options]})


def _refcoco(record: dict, image: Image.Image) -> Sample:
    x, y, w, h = (float(v) for v in record["bbox"])
    expression = next(record[k] for k in EXPRESSION_KEYS if k in record)
    if isinstance(expression, list):
        expression = expression[0]
    box = [x, y, x + w, y + h]
    prompt = f"Locate the {expression} and output its bbox coordinates in JSON format."
    return Sample("refcoco", [_user(image, prompt), _assistant(json.dumps([{"bbox_2d": [round(v) for v in box]}]))],
                  {"bbox_2d": box, "image_size": list(image.size)}, {"expression": expression})


def _vqa(record: dict, image: Image.Image) -> Sample:
    answers = record.get("answers") or [record["answer"]]
    answers = [a["answer"] if isinstance(a, dict) else str(a) for a in answers]
    return Sample("vqa", [_user(image, str(record["question"])), _assistant(answers[0])], {"answers": answers}, {})


BUILDERS = {"mcq": _mcq, "refcoco": _refcoco, "vqa": _vqa}


def load_benchmark(path: str | Path, image_root: str | Path | None = None,
                   limit: int | None = None) -> tuple[list[Sample], Counter]:
    """The usable records of a benchmark file as Samples, and the skipped ones counted by reason."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    samples, skipped, kind = [], Counter(), None
    for line, record in _records(path):
        if limit is not None and len(samples) >= limit:
            break
        if record is None:
            skipped["not JSON"] += 1
            continue
        kind = kind or detect_format(record)
        try:
            sample = BUILDERS[kind](record, _image(record.get("image") or record.get("image_path"), root))
        except FileNotFoundError:
            skipped["image file missing"] += 1
            continue
        except KeyError as err:
            skipped[f"field {err} missing"] += 1
            continue
        except (ValueError, OSError) as err:
            skipped[str(err).split(":")[0]] += 1
            continue
        sample.meta.update(source=str(path), line=line)
        samples.append(sample)
    if skipped:
        log.warning("%s: skipped %d record(s): %s", path.name, sum(skipped.values()), dict(skipped))
    if not samples:
        raise ValueError(f"{path} holds no usable record (skipped: {dict(skipped)})")
    return samples, skipped


__all__ = ["BUILDERS", "detect_format", "load_benchmark"]
