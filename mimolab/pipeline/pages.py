"""Batch documents (``mimolab pages``): every page of some PDFs, one prompt, one JSON line per page.

    result = run_pages(["report.pdf", "slides.pdf"], "path/to/checkpoint", "Summarise this page.", "answers.jsonl")

Pages are rendered with pypdfium2 (the PDFium library, Apache-2.0 / BSD; the optional extra ``files``)
at the largest scale whose pixel count stays within the processor's ``max_pixels`` (the model would
shrink a larger render to that anyway), and at most ``max_dpi``. They go through greedy generation
``batch_size`` at a time, and each answer is appended to ``out`` as soon as its batch is done::

    {"file": "report.pdf", "page": 3, "prompt": "...", "answer": "...", "think": "...", "finish_reason": "eos",
     "width": 896, "height": 1148}

(``think``: the text inside ``<think>...</think>``, apart from the answer; ``width``/``height``: the
render). A run that is killed resumes where it stopped: pages already in ``out`` for the same file and
prompt are not asked again, and a last line the kill cut short is dropped. A file PDFium cannot open,
or a page it cannot render, is skipped and counted (``PagesResult.unreadable``), never fatal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
INSTALL = "rendering PDF pages needs pypdfium2: pip install 'mimolab[files]' (or pip install pypdfium2)"


@dataclass
class PagesResult:
    out: str
    answered: int = 0  # pages answered by this run
    already: int = 0  # pages found in ``out`` from an earlier run, not asked again
    unreadable: dict[str, int] = field(default_factory=dict)  # skipped, per reason
    seconds_per_page: float | None = None  # this run's wall time per answered page (rendering included)


def page_scale(width_pt: float, height_pt: float, max_pixels: int, max_dpi: float = 200.0) -> float:
    """The render scale (pixels per PDF point) of a page: as large as ``max_pixels`` allows, at most ``max_dpi``."""
    scale = min(max_dpi / 72.0, math.sqrt(max_pixels / max(1.0, width_pt * height_pt)))
    while math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:  # whole pixels round up
        scale *= 0.995
    return scale


def _pdfium():
    try:
        import pypdfium2
    except ImportError as err:
        raise ImportError(INSTALL) from err
    return pypdfium2


def render_pages(path: Path, max_pixels: int, skips: Counter, max_dpi: float = 200.0) -> Iterator[tuple[int, object]]:
    """(page number from 1, PIL image) of every page PDFium can render; what it cannot is counted in ``skips``."""
    pdfium = _pdfium()
    try:
        document = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError, ValueError) as err:
        skips["unreadable file"] += 1
        log.warning("skipped %s: %s", path, err)
        return
    try:
        for index in range(len(document)):
            try:
                page = document[index]
                scale = page_scale(*page.get_size(), max_pixels, max_dpi)
                image = page.render(scale=scale).to_pil().convert("RGB")
            except (pdfium.PdfiumError, OSError, ValueError) as err:
                skips["unreadable page"] += 1
                log.warning("skipped %s page %d: %s", path, index + 1, err)
                continue
            yield index + 1, image
    finally:
        document.close()


def done_pages(out: Path, prompt: str) -> set[tuple[str, int]]:
    """(resolved file, page) of the answers already in ``out`` for ``prompt``; a last line that a kill cut
    short (no newline at its end) is removed first, so appending starts on a fresh line."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        with out.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
        data = data[: data.rfind(b"\n") + 1]
    done = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            if row.get("prompt") == prompt:
                done.add((str(Path(row["file"]).resolve()), int(row["page"])))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return done


def answer_pages(model, processor, images: list, prompt: str, *, thinking: bool, max_new_tokens: int) -> list[dict]:
    """Greedy answers to ``prompt`` about each image, in one batch: answer, think text, finish reason."""
    import torch

    from mimolab.model.generation import generate
    from mimolab.tokenizer import split_thinking

    chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}] for _ in images]
    texts = [processor.apply_chat_template(chat, enable_thinking=thinking) for chat in chats]
    inputs = processor(texts, images=images)
    inputs = {k: v.to(model.device) for k, v in inputs.items() if k != "mm_token_type_ids"}
    model.eval()
    with torch.no_grad():
        out = generate(model, inputs.pop("input_ids"), inputs.pop("attention_mask"), max_new_tokens=max_new_tokens,
                       **inputs)
    rows = []
    for tokens, reason in zip(out.sequences, out.finish_reasons):
        think, answer = split_thinking(processor.tokenizer.decode(tokens, skip_special_tokens=True))
        rows.append({"answer": answer, "think": think, "finish_reason": reason})
    return rows


def _pending(files: list[Path], done: set, max_pixels: int, skips: Counter, max_dpi: float) -> Iterator[tuple]:
    for path in files:
        for page, image in render_pages(path, max_pixels, skips, max_dpi):
            if (str(path.resolve()), page) not in done:
                yield path, page, image


def run_pages(files: list[str | Path], checkpoint: str | Path, prompt: str, out: str | Path, *, batch_size: int = 4,
              max_new_tokens: int = 512, thinking: bool = True, max_dpi: float = 200.0,
              on_batch: Callable[[int], None] | None = None) -> PagesResult:
    """Answer ``prompt`` about every page of ``files`` into ``out`` (module docstring); ``on_batch(n)``
    after each batch with the pages answered so far."""
    from mimolab.demo import load_checkpoint  # (torch and transformers: only once there is work)

    files = [Path(f) for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"no such PDF file(s): {', '.join(missing)}")
    _pdfium()
    model, processor = load_checkpoint(checkpoint)
    ip = processor.image_processor
    max_pixels = ip.size.get("longest_edge") or getattr(ip, "max_pixels", None) or 1003520
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done, skips = done_pages(out, prompt), Counter()
    result, start, batch = PagesResult(str(out), already=len(done)), time.perf_counter(), []
    with out.open("a") as f:
        for item in _pending(files, done, max_pixels, skips, max_dpi):
            batch.append(item)
            if len(batch) == batch_size:
                result.answered += _write(f, model, processor, batch, prompt, thinking, max_new_tokens)
                batch = []
                if on_batch is not None:
                    on_batch(result.answered)
        if batch:
            result.answered += _write(f, model, processor, batch, prompt, thinking, max_new_tokens)
    result.unreadable = dict(skips)
    result.seconds_per_page = (time.perf_counter() - start) / result.answered if result.answered else None
    return result


def _write(f, model, processor, batch: list, prompt: str, thinking: bool, max_new_tokens: int) -> int:
    rows = answer_pages(model, processor, [image for _, _, image in batch], prompt, thinking=thinking,
                        max_new_tokens=max_new_tokens)
    for (path, page, image), row in zip(batch, rows):
        f.write(json.dumps({"file": str(path), "page": page, "prompt": prompt, **row, "width": image.width,
                            "height": image.height}) + "\n")
    f.flush()
    os.fsync(f.fileno())  # a batch answered is a batch kept, whatever happens next
    return len(batch)


__all__ = ["PagesResult", "answer_pages", "done_pages", "page_scale", "render_pages", "run_pages"]
