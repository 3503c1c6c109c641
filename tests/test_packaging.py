"""The project's plumbing: dependency lists in sync, configs load, CLI answers, README/CI agree."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from mimolab.config import PRESETS

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_names = {_name(r) for r in project["dependencies"] + extras["notebooks"] + extras["dev"] + extras["bench"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_names = {_name(r) for r in pip_section if not r.startswith("-e")}
    assert pip_names == conda_names, f"only in pyproject: {pip_names - conda_names}; only in environment.yml: {conda_names - pip_names}"
    assert "-e ." in pip_section


def test_every_experiment_yaml_loads_and_profiles_name_presets():
    files = sorted((ROOT / "experiments").rglob("*.yaml"))
    assert files
    for f in files:
        assert isinstance(yaml.safe_load(f.read_text()), dict), f
    profiles = yaml.safe_load((ROOT / "experiments" / "profiles.yaml").read_text())
    assert set(profiles) == set(PRESETS) and all(p["preset"] in PRESETS for p in profiles.values())


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "mimolab", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("params", "pretrain", "notebook", "tour", "samples"):
        assert command in out


def test_cli_help_does_not_import_torch():
    timings = subprocess.run([sys.executable, "-X", "importtime", "-m", "mimolab", "--help"],
                             capture_output=True, text=True, check=True).stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in timings.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "transformers"}, "mimolab --help must stay instant: import lazily"


def test_cli_params_prints_the_7b_total():
    out = subprocess.run([sys.executable, "-m", "mimolab", "params", "--preset", "mimo-vl-7b"],
                         capture_output=True, text=True, check=True).stdout
    assert "8,306,217,216" in out  # transformers' count for the same config (see test_checkpoint)


def test_readme_has_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    assert len(blocks) == 2, "README's Quick start must hold exactly two commands"
    test_command = blocks[1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()
