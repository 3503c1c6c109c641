"""Nonsense settings never train: a stage or GRPO file with a NaN, negative or absurd learning rate, a
grad_clip <= 0, a negative warm-up, a min_lr_ratio outside [0, 1], a negative token share, steps of the
wrong type, an unknown eval task or a negative eval n fails when it is loaded, naming the file and the
field, before anything is written to the run directory; stage files are taken by path (``run_stage``,
``mimolab pretrain --stage``); and a step whose loss or gradient is not finite stops the run before the
weights move, leaving the last good checkpoint as it was."""

import math

import pytest
import torch
import yaml

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.cli import main as cli
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.pipeline import run_stage
from mimolab.pipeline.morl import run_morl
from mimolab.rl.grpo import GRPOConfig, load_grpo_config
from mimolab.train import Stage, Trainer
from mimolab.train.stage import load_stage

SMOKE_STAGE = {"steps": 1, "warmup_steps": 1, "row_tokens": 256, "rows_per_step": 1, "checkpoint_every": 1}
STAGE = {"what": "a user's stage", "lr": {"projector": 1.0e-3}, "shares": {"caption": 1.0}, "init_from": None}

# (setting at the smoke profile, what the error names)
BAD_STAGE = {
    "lr NaN": ({"lr": {"projector": float("nan")}}, r"lr\.projector must be a number, got nan"),
    "lr NaN as YAML text": ({"lr": {"projector": "NaN"}}, r"lr\.projector must be a number, got nan"),
    "lr negative": ({"lr": {"projector": -1e-3}}, r"lr\.projector = -0\.001 is out of range; it must be > 0"),
    "lr absurd": ({"lr": {"projector": 50.0}}, r"lr\.projector = 50\.0 is out of range; it must be > 0 and <= 1"),
    "lr not a number": ({"lr": {"projector": "fast"}}, r"lr\.projector must be a number, got 'fast'"),
    "grad_clip 0": ({"grad_clip": 0}, r"grad_clip = 0 is out of range; it must be > 0"),
    "grad_clip negative": ({"grad_clip": -1.0}, r"grad_clip = -1\.0 is out of range"),
    "warmup negative": ({"warmup_steps": -5}, r"warmup_steps = -5 is out of range; it must be >= 0"),
    "min_lr_ratio below 0": ({"min_lr_ratio": -0.1}, r"min_lr_ratio = -0\.1 is out of range; it must be >= 0 and <= 1"),
    "min_lr_ratio above 1": ({"min_lr_ratio": 1.5}, r"min_lr_ratio = 1\.5 is out of range"),
    "negative share": ({"shares": {"caption": 1.0, "counting": -0.5}}, r"share of counting = -0\.5 is out of range"),
    "shares summing to 0": ({"shares": {"caption": 0.0}}, r"the token shares sum to 0"),
    "steps a string": ({"steps": "ten"}, r"steps must be an integer, got 'ten'"),
    "steps a float": ({"steps": 2.5}, r"steps must be an integer, got 2\.5"),
    "steps true": ({"steps": True}, r"steps must be an integer, got True"),
    "unknown eval task": ({"eval_tasks": ["countin"]}, r"unknown tasks \['countin'\]"),
    "unknown share task": ({"shares": {"captions": 1.0}}, r"unknown tasks \['captions'\]"),
    "unknown key": ({"learning_rate": 1e-3}, r"unknown keys \['learning_rate'\]"),
    "difficulty above 1": ({"difficulty": 2.0}, r"difficulty of caption = 2\.0 is out of range"),
}


def stage_file(tmp_path, name="my_stage", **smoke):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**STAGE, "profiles": {"smoke": {**SMOKE_STAGE, **smoke}}}))
    return path


@pytest.mark.parametrize("case", list(BAD_STAGE))
def test_a_nonsense_stage_fails_at_load_naming_the_field_and_writes_nothing(tmp_path, case):
    setting, message = BAD_STAGE[case]
    path = stage_file(tmp_path, **setting)
    with pytest.raises(ValueError, match=r"stage 'my_stage': " + message):
        load_stage(path, "smoke")
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        run_stage(str(path), "smoke", run_dir, progress=False)
    with pytest.raises(ValueError, match=message):
        cli(["pretrain", "--profile", "smoke", "--stage", str(path), "--out", str(run_dir), "--wandb", "disabled"])
    assert not run_dir.exists()


@pytest.mark.parametrize("n", [-1, 1, 2.5])
def test_a_nonsense_eval_n_fails_before_anything_is_written(tmp_path, n):
    path = stage_file(tmp_path)
    with pytest.raises(ValueError, match=f"eval_n.*{n}"):
        run_stage(str(path), "smoke", tmp_path / "run", eval_n=n, progress=False)
    if isinstance(n, int):
        with pytest.raises(ValueError, match=f"eval_n.*{n}"):
            cli(["pretrain", "--profile", "smoke", "--stage", str(path), "--out", str(tmp_path / "run"),
                 "--eval-n", str(n)])
    assert not (tmp_path / "run").exists()


GRPO = {"tasks": {"counting": 1.0}}
BAD_GRPO = {
    "lr NaN": ({"lr": float("nan")}, r"lr must be a number, got nan"),
    "lr negative": ({"lr": -1e-5}, r"lr = -1e-05 is out of range; it must be > 0"),
    "lr absurd": ({"lr": 10.0}, r"lr = 10\.0 is out of range"),
    "grad_clip 0": ({"grad_clip": 0.0}, r"grad_clip = 0\.0 is out of range; it must be > 0"),
    "negative task weight": ({"tasks": {"counting": 1.0, "grounding": -1.0}}, r"share of grounding = -1\.0 is out of range"),
    "unknown task": ({"tasks": {"countin": 1.0}}, r"unknown tasks \['countin'\]"),
    "steps a string": ({"steps": "2"}, r"steps must be an integer, got '2'"),
    "group of one": ({"group_size": 1}, r"group_size must be at least 2"),
    "temperature 0": ({"temperature": 0}, r"temperature = 0 is out of range"),
}


@pytest.mark.parametrize("case", list(BAD_GRPO))
def test_a_nonsense_grpo_file_fails_at_load_naming_the_field_and_writes_nothing(tmp_path, case):
    setting, message = BAD_GRPO[case]
    path = tmp_path / "my_grpo.yaml"
    path.write_text(yaml.safe_dump({**GRPO, "profiles": {"smoke": {"steps": 2, **setting}}}))
    with pytest.raises(ValueError, match=message):
        load_grpo_config(path, "smoke")
    with pytest.raises(ValueError, match=message):  # MORL reads its file before it touches the run directory
        run_morl("smoke", tmp_path / "no-checkpoint-needed", tmp_path / "morl", config=str(path), progress=False)
    assert not (tmp_path / "morl").exists()
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**{k: v for k, v in {**GRPO, "steps": 2, **setting}.items() if k != "tasks"},
                   tasks=tuple({**GRPO, **setting}["tasks"].items()))


def test_a_grpo_file_reads_an_exponent_without_a_dot_as_a_number(tmp_path):
    """YAML 1.1 reads ``1e-5`` as a string; a learning rate written that way is the number it means."""
    path = tmp_path / "g.yaml"
    path.write_text("tasks: {counting: 1.0}\nlr: 1e-5\nprofiles: {smoke: {clip_eps: 2e-1}}\n")
    cfg = load_grpo_config(path, "smoke")
    assert cfg.lr == 1e-5 and cfg.clip_eps == 0.2


@pytest.mark.parametrize("n", [-1, 1])
def test_morl_refuses_a_nonsense_eval_n_before_touching_its_run_directory(tmp_path, n):
    with pytest.raises(ValueError, match=f"eval_n.*{n}"):
        run_morl("smoke", tmp_path / "no-checkpoint-needed", tmp_path / "morl", eval_n=n, progress=False)
    assert not (tmp_path / "morl").exists()


def test_a_stage_file_given_by_path_trains_under_its_own_name(tmp_path):
    path = stage_file(tmp_path, name="user_projector")
    run_dir = tmp_path / "run"
    assert cli(["pretrain", "--profile", "smoke", "--stage", str(path), "--out", str(run_dir), "--eval-n", "0",
                "--wandb", "disabled"]) == 0
    assert (run_dir / "user_projector" / "final" / "config.json").is_file()
    assert yaml.safe_load((run_dir / "user_projector" / "stage.yaml").read_text())["what"] == "a user's stage"


def test_a_non_finite_loss_stops_before_the_weights_move_and_keeps_the_last_good_checkpoint(tmp_path):
    """A step that goes NaN (here the projector's weights blown up after step 1, as a diverging run's
    are) raises naming the step and the checkpoint kept; that checkpoint's files are untouched, no later
    one or final is written, and the weights are those the NaN step found (the optimizer never stepped)."""
    config = MiMoVLConfig.from_name("smoke")
    processor = world_processor(world_tokenizer(n_per_task=3))
    stage = Stage(name="diverging", lr={"projector": 1e-2}, shares={"caption": 1.0}, steps=4, warmup_steps=1,
                  row_tokens=256, rows_per_step=1, checkpoint_every=1)
    torch.manual_seed(0)
    trainer = Trainer(MiMoVL(config), stage, world_mixture(stage.shares, processor, config, max_length=256),
                      tmp_path)
    trainer.train(steps=1, progress=False)
    kept = tmp_path / "checkpoints" / "step-000001"
    files = {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()}
    assert files
    with torch.no_grad():
        next(trainer.model.visual.merger.parameters()).fill_(math.inf)  # the projector
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(FloatingPointError, match=r"stage 'diverging', step 2: loss (nan|inf).*last good checkpoint is "
                                                  r"kept: " + str(kept)):
        trainer.train(progress=False)
    assert trainer.step == 1
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]
    assert not (tmp_path / "final").exists()
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name]), name
