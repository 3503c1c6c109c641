"""Your data files as mixture sources and prompt sets: JSONL in mimolab's chat schema
(``mimolab.data.schema``) and local Hugging Face ``datasets`` files (parquet, or a directory written
by ``Dataset.save_to_disk``), read with the ``datasets`` library from disk only, never the hub.

    sampler = data_mixture({"caption": 0.5}, {"mine.jsonl": 0.3, "more.parquet": 0.2}, processor, config,
                           max_length=1024)          # world tasks and files by token share
    prompts = PromptFile(read_records("prompts.jsonl"), seed=0)   # what GRPO draws from (draw, state_dict)

Every source yields records of the JSONL schema, so they go through the one tokenizer and its checks:
a bad record is counted per reason by the mixture sampler, never fatal. A ``datasets`` row is the
same record: a ``messages`` column (content items with ``None`` in the fields Arrow added are
cleaned), images given inline (PIL, from an ``Image`` feature) or by path (relative to the file's
folder), and, as in TRL's vision data sets, an ``images`` column that fills the message's empty
``{"type": "image"}`` items in order.

Streaming and resuming as the world's sources: ``open_at(start)`` streams from record ``start``
without loading the file. A file *cycles*: at its end it starts over, so a small file with a large
share is seen several times (as a world task never runs dry), and an empty one ends its source.

Held-out split: record ``i`` of a file is held out when ``frac((i + 1) / golden ratio) < f`` (a
low-discrepancy sequence): a share f of any stretch of the file, within a record or two, and no
period in the file's order lines up with it (a file that alternates tasks still gets both in its
split). It is decided by the index alone, so every reader (training, evaluation, a resumed run)
agrees on it without knowing the file's length or reading it twice.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimolab.data.mixture import MixtureSampler
from mimolab.data.sources import jsonl_source, world_source

if TYPE_CHECKING:
    from mimolab.config import MiMoVLConfig
    from mimolab.data.world import Difficulty
    from mimolab.data.world.scene import Sample
    from mimolab.processing import MiMoVLProcessor

Source = Callable[[int], Iterator[Any]]
INSTALL = "reading parquet files and saved data sets needs the `datasets` library: pip install 'mimolab[files]'"


def file_kind(path: str | Path) -> str:
    """'jsonl', 'parquet' (a file, or a folder of parquet shards) or 'saved' (a ``save_to_disk``
    directory); a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "saved"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise ValueError(f"{path} is a folder but neither a saved data set (dataset_info.json, from save_to_disk) "
                         "nor a folder of .parquet files")
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix == ".parquet":
        return "parquet"
    raise ValueError(f"{path}: a data file is .jsonl (mimolab's chat schema), .parquet, or a save_to_disk directory")


def file_source(path: str | Path) -> Source:
    """A streaming source over one data file, by its kind (``file_kind``)."""
    kind = file_kind(path)
    return jsonl_source(path) if kind == "jsonl" else dataset_source(path)


def _datasets():
    try:
        import datasets
    except ImportError as err:
        raise ImportError(INSTALL) from err
    return datasets


def _open_dataset(path: Path):
    """Parquet streamed (nothing cached, nothing in memory), or a saved data set memory-mapped."""
    datasets = _datasets()
    if file_kind(path) == "saved":
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if len(data) != 1:
                raise ValueError(f"{path} holds the splits {sorted(data)}: point at one of them ({path}/<split>)")
            data = next(iter(data.values()))
        return data
    files = sorted(map(str, path.glob("*.parquet"))) if path.is_dir() else [str(path)]  # shards in name order
    return datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)


def dataset_source(path: str | Path) -> Source:
    """A mixture-sampler source over a parquet file or a ``save_to_disk`` directory: ``open_at(start)``
    streams rows from ``start`` on as schema records (module docstring)."""
    path = Path(path)
    base = str(path.parent)

    def open_at(start: int) -> Iterator[dict]:
        data = _open_dataset(path)
        streamed = isinstance(data, _datasets().IterableDataset)
        for row in data.skip(start) if streamed else (data[i] for i in range(start, len(data))):
            yield row_to_record(row, base)
    return open_at


def _clean(item: Any) -> Any:
    """A content item without the ``None`` fields Arrow gives every struct of a column."""
    return {k: v for k, v in item.items() if v is not None} if isinstance(item, dict) else item


def row_to_record(row: dict, base_dir: str) -> dict:
    """A ``datasets`` row as a schema record: Arrow's ``None`` fields dropped, the ``images`` column
    placed into the empty image items in order, relative paths resolved against ``base_dir``."""
    record = {k: v for k, v in row.items() if k != "images"}
    images = list(row.get("images") or [])
    messages = []
    for message in row.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            content = [_clean(item) for item in content]
            for item in content:
                if isinstance(item, dict) and item.get("type") == "image" and item.get("image") is None and images:
                    item["image"] = images.pop(0)
        messages.append({**_clean(message), "content": content})
    if "messages" in row:
        record["messages"] = messages
    record.setdefault("_base_dir", base_dir)
    return record


# ------------------------------------------------------------------------------------------ views
GOLDEN = (math.sqrt(5) - 1) / 2


def is_held_out(index: int, fraction: float) -> bool:
    """Whether record ``index`` of a file is in the held-out split of ``fraction`` (module docstring)."""
    return ((index + 1) * GOLDEN) % 1.0 < fraction


def split_source(open_at: Source, fraction: float, held_out: bool) -> Source:
    """The training (``held_out=False``) or held-out view of a source; ``start`` counts records of the view."""
    if not fraction:
        return open_at if not held_out else (lambda start: iter(()))

    def open_view(start: int) -> Iterator[Any]:
        index = seen = 0  # the file's index of the view's record ``start``: counted, the file is not read
        while seen < start or is_held_out(index, fraction) != held_out:
            seen += is_held_out(index, fraction) == held_out
            index += 1
        for i, record in enumerate(open_at(index), start=index):
            if is_held_out(i, fraction) == held_out:
                yield record
    return open_view


def cycle_source(open_at: Source) -> Source:
    """A source that starts over at its end; ``start`` may be past the end (a resumed later pass).
    A source with no records ends instead of spinning."""
    size: list[int] = []  # records per pass, counted once when a resumed run needs it

    def open_cycled(start: int) -> Iterator[Any]:
        if start:
            if not size:
                size.append(sum(1 for _ in open_at(0)))
            start %= max(1, size[0])
        while True:
            produced = 0
            for record in open_at(start):
                produced += 1
                yield record
            if not produced and not start:
                return
            start = 0
    return open_cycled


def source_names(paths: list[str], taken: set[str] = frozenset()) -> dict[str, str]:
    """A short source name per file (its stem; the path as given where stems collide with each other or
    with ``taken``, the world tasks of the same mixture). Records without ``task`` take this name."""
    stems = [Path(p).stem for p in paths]
    return {p: stem if stems.count(stem) == 1 and stem not in taken else str(p) for p, stem in zip(paths, stems)}


def data_mixture(shares: dict[str, float], data: dict[str, float], processor: MiMoVLProcessor, config: MiMoVLConfig,
                 *, max_length: int, seed: int = 0, difficulty: Difficulty = 0.5, text_only: bool = False,
                 eval_split: float = 0.0, reasoning_reply: str = "long") -> MixtureSampler:
    """World tasks (``shares``) and data files (``data``: path -> token share) in one resumable stream;
    files cycle and leave out their held-out split (``eval_split``). ``reasoning_reply``: the world's
    reasoning samples with their chain of thought ("long") or the answer alone ("short")."""
    from mimolab.data.tokenize import record_tokenizer

    sources: dict[str, Source] = {task: world_source(task, seed=seed, difficulty=difficulty, text_only=text_only,
                                                     reasoning_reply=reasoning_reply) for task in shares}
    names = source_names(list(data), set(shares))
    for path, name in names.items():
        source = cycle_source(split_source(file_source(path), eval_split, held_out=False))
        sources[name] = _text_only(source) if text_only else source
    return MixtureSampler(sources, {**shares, **{names[p]: s for p, s in data.items()}},
                          record_tokenizer(processor, config, max_length))


def _text_only(open_at: Source) -> Source:
    """Records with their image and video items removed (a language-model-only stage)."""
    def strip(record: Any) -> Any:
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            return record
        messages = [{**m, "content": [c for c in m["content"] if isinstance(c, dict) and c.get("type") == "text"]}
                    if isinstance(m, dict) and isinstance(m.get("content"), list) else m for m in record["messages"]]
        return {**record, "messages": messages}
    return lambda start: map(strip, open_at(start))


def held_out_records(path: str | Path, fraction: float, limit: int | None = None) -> list[dict]:
    """The held-out records of a file (at most ``limit``), in file order."""
    return list(itertools.islice(split_source(file_source(path), fraction, held_out=True)(0), limit))


def read_records(path: str | Path) -> list[dict]:
    """Every record of a file (media not loaded): for prompt sets, which are checked whole before training."""
    return list(file_source(path)(0))


# ------------------------------------------------------------------------------------------ prompts
PROMPT_FIELDS = ("messages", "task", "answer", "_base_dir")  # what a prompt record's Sample holds itself


def prompt_sample(record: dict, default_task: str = "prompt") -> Sample:
    """A prompt record as the Sample GRPO rolls out: its turns with images and videos loaded, ``task``
    (default ``default_task``), ``answer``, and every other field kept as a reward column
    (``meta["columns"]``: rewards receive them by name, as TRL passes a data set's columns)."""
    from mimolab.data.world.scene import Sample

    base = Path(record.get("_base_dir") or ".")
    messages = [{**m, "content": [_load(item, base) for item in m["content"]]} if isinstance(m["content"], list) else m
                for m in record["messages"]]
    columns = {k: v for k, v in record.items() if k not in PROMPT_FIELDS}
    return Sample(record.get("task", default_task), messages, record.get("answer", {}),
                  {"columns": columns, "id": record.get("id")})


def _load(item: dict, base: Path) -> dict:
    from mimolab.processing import load_image, load_video

    kind = item.get("type")
    if kind not in ("image", "video"):
        return item
    src = item.get(kind)
    if isinstance(src, str):
        src = base / src
    if kind == "image":
        return {**item, "image": load_image(src)}
    fps = item.get("fps", 2)
    return {**item, "video": load_video(src, fps=fps, source_fps=fps) if not isinstance(src, list) else
            [load_image(f) for f in src]}


class PromptFile:
    """Prompt records as GRPO draws them: a seeded shuffle per pass over the records, media loaded
    only when drawn. ``state_dict``/``load_state_dict`` hold the position, so a resumed run draws
    the prompts an uninterrupted one would have."""

    def __init__(self, records: list[dict], *, seed: int = 0, default_task: str = "prompt") -> None:
        if not records:
            raise ValueError("a prompt set needs at least one record")
        self.records, self.seed, self.default_task = records, seed, default_task
        self.position = 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def draw(self, n: int) -> list[Sample]:
        samples = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.records))
            samples.append(prompt_sample(self.records[self._order(epoch)[i]], self.default_task))
            self.position += 1
        return samples

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


__all__ = ["PromptFile", "cycle_source", "data_mixture", "dataset_source", "file_kind", "file_source",
           "held_out_records", "is_held_out", "prompt_sample", "read_records", "row_to_record", "source_names",
           "split_source"]
