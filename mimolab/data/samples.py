"""``data_samples/``: a few records of every data type, committed, made by one command:

    mimolab samples --out data_samples        (or: python -m mimolab.data.samples)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mimolab.data.schema import write_jsonl
from mimolab.data.world import TASKS, generate


def _first_media(record: dict) -> str | None:
    for item in record["messages"][0]["content"]:
        if isinstance(item, dict) and item.get("type") == "image":
            return item["image"]
        if isinstance(item, dict) and item.get("type") == "video":
            return item["video"] + "0000.png"
    return None


def make_samples(out_dir: str | Path = "data_samples", n_per_task: int = 2, seed: int = 0) -> Path:
    out_dir = Path(out_dir)
    lines = ["# data_samples", "", f"{n_per_task} samples of every data type of the synthetic world (seed {seed}), "
             "in mimolab's JSONL chat format (see `mimolab/data/schema.py`). Regenerate with "
             "`mimolab samples --out data_samples`.", ""]
    for task in TASKS:
        path = write_jsonl((generate(task, i, seed=seed) for i in range(n_per_task)), out_dir, task)
        record = json.loads(path.read_text().splitlines()[0])
        lines += [f"## {task}", ""]
        if (media := _first_media(record)) is not None:
            lines += [f"![{task}]({media})", ""]
        lines += ["```json", json.dumps(record, indent=1)[:2500], "```", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    return out_dir


if __name__ == "__main__":
    make_samples(sys.argv[1] if len(sys.argv) > 1 else "data_samples")
