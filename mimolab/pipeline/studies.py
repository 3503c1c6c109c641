"""The three studies behind MiMo-VL's findings: their settings (``StudySpec``); ``study_long_cot`` and
``study_grpo`` run them, notebooks 09-11 call those.

| study | file | arms | question |
|---|---|---|---|
| ``long_cot`` | experiments/studies/long_cot.yaml | stages 3-4 with long-CoT / answer-only replies to the same problems, same tokens | does the chain of thought help, and keep helping with tokens? |
| ``grpo_modes`` | experiments/studies/grpo_modes.yaml | on-policy (1 update per batch) / vanilla (4, clipped) | which GRPO learns more from the same rollouts? |
| ``interference`` | experiments/studies/interference.yaml | RL on short-answer tasks / long-CoT tasks / the mixture | does mixing the tasks cost either side? |

Every arm runs once per seed; held-out scores are measured along the way. ``study_results`` turns
the curves into each arm's mean and spread over seeds and a Welch test between the arms compared,
and writes ``experiments/results/<study>.json``, ``.md`` and ``.png``; W&B runs are grouped per study.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimolab.settings import RESULTS_DIR, check_keys, check_value, load_run_file, runs_root
from mimolab.train.stage import check_tasks


TESTS = ("welch", "paired")


@dataclass(frozen=True)
class StudySpec:
    """One study file at one profile (``experiments/studies/<name>.yaml``)."""

    name: str
    arms: dict[str, dict[str, Any]]  # arm -> its overrides (GRPO settings; long_cot: reasoning_reply, thinking, drop)
    compare: tuple[tuple[str, str], ...]  # (baseline, arm) pairs tested
    eval_tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    eval_n: int
    what: str = ""
    steps: int = 0  # GRPO studies: steps per run
    eval_every: int = 0  # GRPO studies: held-out scores every this many steps
    stage3_steps: int = 0  # long_cot: steps of each stage
    stage4_steps: int = 0
    stage3_evals: int = 0  # long_cot: held-out scores at this many evenly spaced checkpoints of stage 3
    start: str = ""  # long_cot: the pipeline stage (or checkpoint directory) the arms start from
    difficulty: Any = None  # long_cot: world difficulty of stages 3-4 (None: the stages' own)
    stage_settings: dict[str, Any] = field(default_factory=dict)  # long_cot: stage settings for every arm (e.g. lr)
    final_eval_n: int = 0  # long_cot: held-out samples at the last point, which the tests use (0: eval_n)
    pilot: dict[str, Any] = field(default_factory=dict)  # the pilot's measured spread, recorded in the results
    grpo: dict[str, Any] = field(default_factory=dict)  # GRPO studies: settings every arm shares over the rl file's
    # the test between arms across seeds: "welch" (independent arms) or "paired" (by seed: where an arm's seed draws
    # the same problems in the same order as the other arm's, their difference per seed is the measurement)
    test: str = "welch"

    def __post_init__(self) -> None:
        source = f"study {self.name!r}"
        if not self.arms or not self.seeds:
            raise ValueError(f"{source}: needs at least one arm and one seed")
        for pair in self.compare:
            unknown = [arm for arm in pair if arm not in self.arms]
            if len(pair) != 2 or unknown:
                raise ValueError(f"{source}: compare {list(pair)} must name two of the arms {sorted(self.arms)}")
        check_tasks(source, {}, self.eval_tasks)
        if self.test not in TESTS:
            raise ValueError(f"{source}: test {self.test!r}: choose one of {TESTS}")
        for seed in self.seeds:
            check_value(source, "seed", seed, integer=True)
        check_value(source, "eval_n", self.eval_n, integer=True, low=2)
        for name in ("steps", "eval_every", "stage3_steps", "stage4_steps", "stage3_evals", "final_eval_n"):
            check_value(source, name, getattr(self, name), integer=True, low=0)


def load_study(name_or_path: str | Path, profile: str) -> StudySpec:
    """A study file's settings at ``profile`` (top-level defaults, ``profiles.<profile>`` overrides)."""
    spec = load_run_file("studies", name_or_path, profile)
    check_keys(spec, StudySpec, f"study file {spec['name']!r}")
    spec["arms"] = {arm: dict(overrides or {}) for arm, overrides in spec.get("arms", {}).items()}
    spec["compare"] = tuple(tuple(pair) for pair in spec.get("compare", ()))
    spec["eval_tasks"] = tuple(spec.get("eval_tasks", ()))
    spec["seeds"] = tuple(spec.get("seeds", ()))
    return StudySpec(**spec)


def pick_seeds(spec: StudySpec, seeds) -> tuple[int, ...]:
    """``seeds`` (a non-empty subset of the spec's, so seeds can run in separate processes), or all."""
    if seeds is None:
        return spec.seeds
    unknown = sorted(set(seeds) - set(spec.seeds))
    if unknown or not seeds:
        raise ValueError(f"study {spec.name!r}: seeds {sorted(seeds)} must be a non-empty subset of {list(spec.seeds)}")
    return tuple(s for s in spec.seeds if s in set(seeds))  # in the spec's order


def start_checkpoint(spec: StudySpec, profile: str, progress: bool, start: str | Path | None = None, *,
                     default: str = "stage2_alignment") -> Path:
    """The arms' start: ``start`` if given, else the spec's, else ``default``; a pipeline stage's name means its
    final checkpoint (the stage runs first if missing), anything else a checkpoint directory."""
    from mimolab.pipeline.stages import STAGES, run_stage

    start = str(start or spec.start or default)
    if start in STAGES:
        return run_stage(start, profile, progress=progress).final
    path = Path(start).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"study {spec.name!r}: start {start!r} is neither a pipeline stage nor a checkpoint")
    return path


def write_json(path: Path, data) -> None:
    """Atomically: a reader (another seed's process) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def cached_curve(run_dir: Path, settings: dict) -> list[dict] | None:
    """The curve of a finished arm x seed run made with these ``settings``, else None. A run made with other
    settings (the study file changed since) is removed, naming what changed, so it runs again; a curve cached
    before settings were recorded beside it is reused, with a warning."""
    done, recorded = run_dir / "curve.json", run_dir / "settings.json"
    if not done.exists():
        return None
    if not recorded.exists():
        logging.getLogger(__name__).warning("%s: cached curve without its settings.json, reused as it is", run_dir.name)
        return json.loads(done.read_text())
    old, new = json.loads(recorded.read_text()), _as_json(settings)
    if old == new:
        return json.loads(done.read_text())
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    logging.getLogger(__name__).warning("%s: cached curve made with other %s: running it again", run_dir.name,
                                        ", ".join(changed))
    shutil.rmtree(run_dir)
    return None


def save_curve(run_dir: Path, settings: dict, curve: list[dict]) -> None:
    """The finished run's curve and the settings it was made with (what ``cached_curve`` compares)."""
    write_json(run_dir / "settings.json", _as_json(settings))
    write_json(run_dir / "curve.json", curve)


def _as_json(data: dict) -> dict:
    return json.loads(json.dumps(data, default=str))  # tuples as lists, paths as strings: as read back


def results_dir(profile: str, run_dir: str | Path | None = None) -> Path:
    """Where a study writes its results: the committed ``experiments/results``, except at the smoke
    profile (CI), which writes into ``run_dir/results`` (default: under the runs root) and leaves the
    committed results alone."""
    if profile != "smoke":
        return RESULTS_DIR
    return Path(run_dir or runs_root() / "smoke" / "studies") / "results"


__all__ = ["StudySpec", "load_study", "pick_seeds", "results_dir", "start_checkpoint", "write_json"]
