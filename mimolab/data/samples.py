"""``data_samples/``: a few records of every data type, committed, made by one command:

    mimolab samples --out data_samples        (or: python -m mimolab.data.samples [out_dir])

Writes ``<task>.jsonl`` per task with its ``images/`` and ``videos/`` (see ``mimolab.data.schema``)
and a ``README.md`` that shows, per task, the first record's pictures and the record as JSON.
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


def make_samples(out_dir: str | Path = "data_samples", n_per_task: int = 2, seed: int = 0) -> Path:
    """Write ``n_per_task`` samples of every task (difficulty 0.5) and the README into ``out_dir``."""
    out_dir = Path(out_dir)
    lines = ["# data_samples", "", f"{n_per_task} samples of every data type of the synthetic world (seed {seed}), "
             "in mimolab's JSONL chat format (see `mimolab/data/schema.py`). Regenerate with "
             "`mimolab samples --out data_samples` or `python -m mimolab.data.samples`.", ""]
    for task in TASKS:
        path = write_jsonl((generate(task, i, seed=seed) for i in range(n_per_task)), out_dir, task)
        record = json.loads(path.read_text().splitlines()[0])
        lines += [f"## {task}", ""]
        if links := media_links(record, out_dir):
            lines += [" ".join(f"![{task}]({link})" for link in links), ""]
        lines += ["```json", json.dumps(record, indent=1), "```", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    return out_dir


if __name__ == "__main__":
    make_samples(sys.argv[1] if len(sys.argv) > 1 else "data_samples")
