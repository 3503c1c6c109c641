"""Where things live and how run files load: the profile, the runs root, and the one YAML loader.

Every setting the library reads from the environment is read here, and nowhere else:

- ``MIMOLAB_PROFILE``: the profile a notebook runs at when its ``profile`` parameter is unset;
- ``MIMOLAB_RUNS``: the root every run directory lives under (default: the checkout's ``runs/``).

Run files (``experiments/pretrain/*.yaml`` stages, ``experiments/rl/*.yaml`` GRPO runs,
``experiments/studies/*.yaml`` studies) share one layout: top-level keys are the defaults,
``profiles.<profile>`` overrides them, and keyword overrides win over both. ``load_run_file``
reads any of them; ``check_keys`` refuses a key the target dataclass does not have.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from mimolab.config import PRESETS

PROFILES = tuple(PRESETS)  # a profile is a model preset plus the run files' settings of that name
REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO_ROOT / "experiments"
RESULTS_DIR = EXPERIMENTS / "results"  # the committed study results


def get_profile(default: str = "cpu") -> str:
    """``MIMOLAB_PROFILE`` if set, else ``default``; a clear error for an unknown name."""
    profile = os.environ.get("MIMOLAB_PROFILE", default)
    check_profile(profile)
    return profile


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")


def runs_root() -> Path:
    """``$MIMOLAB_RUNS``, by default the checkout's ``runs/``: every run directory lives below it."""
    return Path(os.environ.get("MIMOLAB_RUNS") or REPO_ROOT / "runs")


def relative_to_runs(path: str | Path) -> str:
    """A path as results files record it: relative to the runs root (``runs/...``), or its last two
    parts when it lies elsewhere. Committed results never carry a machine's absolute paths."""
    path, root = Path(path).resolve(), runs_root().resolve()
    if path.is_relative_to(root):
        return str(Path("runs") / path.relative_to(root))
    return str(Path(*path.parts[-2:]))


def run_file(kind: str, name_or_path: str | Path) -> Path:
    """``experiments/<kind>/<name>.yaml``, or ``name_or_path`` itself when it is a YAML file path."""
    path = Path(name_or_path).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        path = EXPERIMENTS / kind / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (EXPERIMENTS / kind).glob("*.yaml"))
        raise FileNotFoundError(f"no {kind} file {path}; files under experiments/{kind}: {known}")
    return path


def load_run_file(kind: str, name_or_path: str | Path, profile: str, **overrides: Any) -> dict:
    """A run file's settings at ``profile`` (module docstring); ``name`` defaults to the file's stem."""
    path = run_file(kind, name_or_path)
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path.name}: expected a mapping of settings, got {type(spec).__name__}")
    per_profile = spec.pop("profiles", {}) or {}
    if profile not in per_profile:
        raise KeyError(f"{path.stem!r} has no settings for profile {profile!r}; it has {sorted(per_profile)}")
    return {"name": path.stem, **spec, **(per_profile[profile] or {}), **overrides}


def check_value(source: str, name: str, value: Any, *, integer: bool = False, low: float | None = None,
                high: float | None = None, above: float | None = None) -> None:
    """Refuse a setting of the wrong type or outside its range, naming the file and the field: a NaN
    learning rate trains and saves NaN weights, a negative one trains uphill; neither may start."""
    number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    kind = "an integer" if integer else "a number"
    if not number or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{source}: {name} must be {kind}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
        bounds = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
                  f"<= {high}" if high is not None else ""]
        raise ValueError(f"{source}: {name} = {value!r} is out of range; it must be {' and '.join(b for b in bounds if b)}")


def as_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: make it the float it means; anything else is left
    for the checks to name."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def check_keys(spec: dict, cls: type, source: str) -> None:
    """Refuse keys that ``cls`` (a dataclass) has no field for, naming them and the fields it has."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; a {cls.__name__} has {sorted(fields)}")


__all__ = ["EXPERIMENTS", "PROFILES", "RESULTS_DIR", "as_number", "check_keys", "check_value", "get_profile", "load_run_file",
           "relative_to_runs", "run_file", "runs_root"]
