"""Streaming sources for the mixture sampler: ``open_at(start)`` -> an iterator from record ``start``.

A source never holds the data set in memory, and ``start`` lets a resumed job skip straight to the
next unseen record: the synthetic world computes record i directly, a JSONL file is re-read
line by line up to it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mimolab.data.mixture import BadRecord
from mimolab.data.schema import parse_line

if TYPE_CHECKING:
    from mimolab.data.world import Difficulty


def world_source(task: str, seed: int = 0, difficulty: Difficulty = 0.5, text_only: bool = False,
                 reasoning_reply: str = "long") -> Callable[[int], Iterator]:
    """Samples ``index = start, start + 1, ...`` of a synthetic task (each a pure function of its index).
    ``text_only`` drops the images and videos and keeps the words (a language model's view of the task);
    ``reasoning_reply="short"`` gives reasoning samples the answer without the chain of thought (same
    problems, same images: ``mimolab.data.world.reasoning.with_reply``)."""
    from mimolab.data.world import generate
    from mimolab.data.world.reasoning import with_reply

    def open_at(start: int) -> Iterator:
        samples = (with_reply(generate(task, index, seed=seed, difficulty=difficulty), reasoning_reply)
                   for index in itertools.count(start))
        return map(without_media, samples) if text_only else samples
    return open_at


def without_media(sample):
    """The sample with its image and video items removed from every turn."""
    import dataclasses

    messages = [{**m, "content": [item for item in m["content"] if item.get("type") == "text"]}
                if isinstance(m["content"], list) else m for m in sample.messages]
    return dataclasses.replace(sample, messages=messages)


def jsonl_source(path: str | Path) -> Callable[[int], Iterator[dict | BadRecord]]:
    """A mixture-sampler source over a JSONL file: ``open_at(start)`` streams records (each with its
    folder as ``_base_dir``, for relative image paths) from line ``start`` on, without reading the file
    into memory. One item per line, so positions stay line numbers: a line that is not a record
    (``mimolab.data.schema.parse_line``: not UTF-8, empty, not JSON, not an object) comes through as
    the ``BadRecord`` saying why, which the sampler counts and skips; the lines around it are unaffected."""
    path = Path(path)

    def open_at(start: int) -> Iterator[dict | BadRecord]:
        with path.open("rb") as f:  # bytes: each line decoded alone, so a bad byte costs only its line
            for i, line in enumerate(f):
                if i < start:
                    continue
                try:
                    record = parse_line(line)
                except BadRecord as err:
                    yield err
                    continue
                record.setdefault("_base_dir", str(path.parent))
                yield record
    return open_at
