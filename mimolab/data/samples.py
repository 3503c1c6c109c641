"""``data_samples/``: a few records of every data type, committed, made by one command:

    mimolab samples --out data_samples        (or: python -m mimolab.data.samples [out_dir])

Writes ``<task>.jsonl`` per task with its ``images/`` and ``videos/`` (see ``mimolab.data.schema``)
and a ``README.md`` that shows, per task, the first record's pictures and the record as JSON, then
the other records' pictures with their question and answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mimolab.data.schema import write_jsonl
from mimolab.data.world import TASKS, generate


def media_links(record: dict, out_dir: Path) -> list[str]:
    """Relative paths of a record's images and video frames (every frame, in order)."""
    links = []
    for item in record["messages"][0]["content"]:
        if isinstance(item, dict) and item.get("type") == "image":
            links.append(item["image"])
        elif isinstance(item, dict) and item.get("type") == "video":
            links += [item["video"] + p.name for p in sorted((out_dir / item["video"]).glob("*.png"))]
    return links


def pretty(value: object, depth: int = 0, used: int = 0, width: int = 100) -> str:
    """Indented JSON in which any list or object that fits on its line (``width`` columns, ``used``
    of them taken by the indent and key) stays on one line."""
    flat = json.dumps(value)
    if not isinstance(value, (dict, list)) or not value or used + len(flat) <= width:
        return flat
    pad = "  " * (depth + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: " for k in value]
        items = [key + pretty(v, depth + 1, len(key), width) for key, v in zip(items, value.values())]
    else:
        items = [pad + pretty(v, depth + 1, len(pad), width) for v in value]
    return ("{" if isinstance(value, dict) else "[") + "\n" + ",\n".join(items) + "\n" + "  " * depth + (
        "}" if isinstance(value, dict) else "]")


def texts(message: dict) -> str:
    """A turn's text, with ``<image>`` / ``<video>`` where the pictures go."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(c["text"] if c.get("type") == "text" else f"<{c.get('type')}>" for c in content)


def task_section(task: str, records: list[dict], out_dir: Path) -> list[str]:
    lines = [f"## {task}", ""]
    if links := media_links(records[0], out_dir):
        lines += [" ".join(f"![{task}]({link})" for link in links), ""]
    lines += ["```json", pretty(records[0]), "```", ""]
    for record in records[1:]:
        question, reply = texts(record["messages"][0]), texts(record["messages"][-1])
        pictures = " ".join(f"![{task}]({link})" for link in media_links(record, out_dir))
        reply = reply.replace("\n", " ")  # one line of inline code
        reply = reply if len(reply) < 300 else reply[:150] + " ... " + reply[-120:]
        lines += [f"{pictures}\n\n**Q:** `{question}`  \n**A:** `{reply}`".strip(), ""]
    return lines


def make_samples(out_dir: str | Path = "data_samples", n_per_task: int = 3, seed: int = 0) -> Path:
    """Write ``n_per_task`` samples of every task (difficulty 0.5) and the README into ``out_dir``."""
    out_dir = Path(out_dir)
    intro = (f"{n_per_task} samples of every data type of the synthetic world (seed {seed}, difficulty 0.5), in "
             "mimolab's JSONL chat format (see `mimolab/data/schema.py`; what each difficulty changes: "
             "`mimolab/data/world/__init__.py`). Regenerate with `mimolab samples --out data_samples` or "
             "`python -m mimolab.data.samples`.")
    lines = ["# data_samples", "", intro, ""]
    for task in TASKS:
        path = write_jsonl((generate(task, i, seed=seed) for i in range(n_per_task)), out_dir, task)
        records = [json.loads(line) for line in path.read_text().splitlines()]
        lines += task_section(task, records, out_dir)
    (out_dir / "README.md").write_text("\n".join(lines))
    return out_dir


if __name__ == "__main__":
    make_samples(sys.argv[1] if len(sys.argv) > 1 else "data_samples")
