"""benchmarks/main_job.py --against: a run's report results against an earlier run's, paired per held-out sample."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from main_job import against  # noqa: E402


def write_run(root: Path, final: dict, before: dict, after: dict) -> Path:
    rows = lambda scores: [{"task": t, "metric": "exact", "score": sum(s) / len(s), "stderr": 0.0, "chance": 0.0,  # noqa: E731
                            "n": len(s), "per_sample": s} for t, s in scores.items()]
    (root / "morl").mkdir(parents=True)
    (root / "final_eval.json").write_text(json.dumps(rows(final)))
    (root / "morl" / "morl.json").write_text(json.dumps({"before": rows(before), "after": rows(after)}))
    return root


def test_results_are_compared_sample_by_sample(tmp_path):
    new = write_run(tmp_path / "new", {"chart": [1, 1, 0, 1]}, {"chart": [0, 1, 0, 0]}, {"chart": [1, 1, 0, 1]})
    old = write_run(tmp_path / "old", {"chart": [1, 0, 0, 0], "ocr": [1.0]}, {"chart": [0, 1, 0, 0]},
                    {"chart": [0, 1, 0, 1]})
    out = against(new, old)
    assert set(out["final"]) == {"chart"}  # a task only one run scored is left out
    final = out["final"]["chart"]
    diffs = [0, 1, 0, 1]  # new - old, sample by sample
    half = 1.96 * math.sqrt(sum((d - 0.5) ** 2 for d in diffs) / 3) / 2
    assert final["difference"] == 0.5 and final["ci95"] == pytest.approx([0.5 - half, 0.5 + half], abs=1e-4)
    assert (final["new"], final["old"], final["n"]) == (0.75, 0.25, 4)
    # MORL's change (after - before) differs only on sample 0: +1 here, 0 there
    assert out["morl_change"]["chart"]["difference"] == 0.25 and out["morl_after"]["chart"]["difference"] == 0.25
    mismatched = write_run(tmp_path / "short", {"chart": [1, 0]}, {"chart": [0]}, {"chart": [1]})
    with pytest.raises(ValueError, match="different samples"):
        against(new, mismatched)
