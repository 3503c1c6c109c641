"""Running a pre-training stage and the stages it starts from: ``experiments/pretrain/*.yaml``, each
from the previous stage's final checkpoint, one run directory for the lot.

    run_dir/
      processor/                      the world tokenizer + image/video settings (made once)
      <stage>/stage.yaml              the resolved stage (profile applied)
      <stage>/metrics.jsonl           one record per step (W&B too, offline unless a key is set)
      <stage>/checkpoints/step-N/     model (Qwen2.5-VL format) + trainer_state.pt: resumable
      <stage>/final/                  model + processor: loads in mimolab and transformers
      <stage>/eval.json               held-out scores on the stage's target tasks
      report.md, figures/             written by ``mimolab.pipeline.report``

Re-running a stage whose ``final/`` exists returns it; a stage killed half-way resumes from its
last checkpoint with the losses an uninterrupted run would have had.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from mimolab.config import MiMoVLConfig
from mimolab.data.files import data_mixture
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.eval.harness import evaluate
from mimolab.eval.results import TaskScore, load_scores, save_scores
from mimolab.model.checkpoint import atomic_directory
from mimolab.model.vlm import MiMoVL
from mimolab.processing import MiMoVLProcessor
from mimolab.settings import check_value, run_file, runs_root
from mimolab.train.checkpoints import LoopRNG, save_final
from mimolab.train.loop import Trainer
from mimolab.train.stage import Stage, load_stage
from mimolab.train.tracking import Tracker
from mimolab.train.vision_warmup import VisionWarmup

STAGES = ("stage0_llm", "stage0_vision", "stage1_projector", "stage2_alignment", "stage3_multimodal", "stage4_long_context")


@dataclass
class StageResult:
    name: str
    stage: Stage
    final: Path  # the stage's final checkpoint directory
    history: list[dict]  # this process's records (empty when the stage was already done)
    eval: list[TaskScore]  # held-out scores on the stage's eval_tasks (may be empty)


def check_eval_n(name: str, n: int, allow_zero: bool = False) -> None:
    """A held-out sample count: at least 2 (a mean and its standard error), or 0 for none where allowed."""
    if allow_zero and n == 0:
        return
    check_value("pipeline", name, n, integer=True, low=2)


def default_run_dir(profile: str) -> Path:
    """``$MIMOLAB_RUNS/<profile>/pretrain``."""
    return runs_root() / profile / "pretrain"


def stages_for(profile: str) -> list[str]:
    """The pipeline's stages that have settings for ``profile`` (stage 0 exists for small profiles only)."""
    return [name for name in STAGES if profile in (yaml.safe_load(run_file("pretrain", name).read_text())
                                                   .get("profiles") or {})]


def get_processor(run_dir: Path) -> MiMoVLProcessor:
    """The run's processor: made (tokenizer trained on the world's text) once, then reloaded."""
    path = run_dir / "processor"
    if not (path / "tokenizer.json").exists():
        with atomic_directory(path) as tmp:
            world_processor(world_tokenizer()).save_pretrained(tmp)
    return MiMoVLProcessor.from_pretrained(path)


def initial_model(stage: Stage, profile: str, run_dir: Path, **run_kwargs) -> MiMoVL:
    """Fresh weights (seeded), the final checkpoint of a named earlier stage (run first if
    missing), or a checkpoint directory."""
    if stage.init_from is None:
        with LoopRNG(stage.seed).active():  # seeded weights, without moving the caller's RNG
            return MiMoVL(MiMoVLConfig.from_name(profile))
    if stage.init_from in STAGES:
        return MiMoVL.from_pretrained(run_stage(stage.init_from, profile, run_dir, **run_kwargs).final)
    path = Path(stage.init_from).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"stage {stage.name!r} starts from {path}, which is not a checkpoint directory")
    return MiMoVL.from_pretrained(path)


def run_stage(name: str, profile: str = "cpu", run_dir: str | Path | None = None, *, tracking: str | None = None,
              progress: bool = True, eval_n: int = 0, accelerator=None, log=None, **overrides) -> StageResult:
    """Train one stage (after the stages it starts from), evaluate it, and return its final checkpoint.
    ``name``: a stage of ``experiments/pretrain`` or the path of a stage YAML file (its stem names it)."""
    check_eval_n("eval_n", eval_n, allow_zero=True)
    run_dir = Path(run_dir) if run_dir else default_run_dir(profile)
    stage = load_stage(name, profile, **overrides)
    name = stage.name
    stage_dir = run_dir / name
    final = stage_dir / "final"
    kwargs = dict(tracking=tracking, progress=progress, accelerator=accelerator)
    if final.exists():
        return StageResult(name, stage, final, [], _read_eval(stage_dir))
    stage_dir.mkdir(parents=True, exist_ok=True)
    processor = get_processor(run_dir)
    model = initial_model(stage, profile, run_dir, **kwargs)
    if accelerator is not None:
        model.to(accelerator.device)
    resolved = {"profile": profile, **dataclasses.asdict(stage)}
    (stage_dir / "stage.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    is_main = accelerator is None or accelerator.is_main_process
    tracker = Tracker(stage_dir, resolved, name=f"{profile}-{name}", group=f"pretrain-{profile}",
                      mode=tracking if is_main else "disabled")
    if stage.objective == "scene_labels":
        history = _warm_up_vision(model, processor, stage, stage_dir, tracker, eval_n, progress, log) if is_main else []
        if accelerator is not None:
            accelerator.wait_for_everyone()
        return StageResult(name, stage, final, history, _read_eval(stage_dir))
    sampler = data_mixture(stage.shares, stage.data, processor, model.config, max_length=stage.row_tokens,
                           seed=stage.seed, difficulty=stage.difficulty, text_only=stage.text_only,
                           reasoning_reply=stage.reasoning_reply)
    with tracker:
        trainer = Trainer(model, stage, sampler, stage_dir, tracker=tracker, accelerator=accelerator)
        trainer.resume()
        history = trainer.train(progress=progress, log=log)
        if is_main:
            tracker.summary({"skipped_records": dict(sampler.skips.counts)})
            scores = _evaluate(model, processor, stage, eval_n, progress)
            save_scores(scores, stage_dir / "eval.json")
            if scores:
                tracker.log({f"eval/{row.task}": row.score for row in scores})
            save_final(model, processor, final)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return StageResult(name, stage, final, history, _read_eval(stage_dir))


def _warm_up_vision(model: MiMoVL, processor: MiMoVLProcessor, stage: Stage, stage_dir: Path, tracker: Tracker,
                    eval_n: int, progress: bool, log) -> list[dict]:
    """The small profiles' vision warm-up (one process): train, score the held-out scenes, save."""
    with tracker:
        warmup = VisionWarmup(model, stage, processor.image_processor, stage_dir, tracker)
        warmup.resume()
        history = warmup.train(progress=progress, log=log)
        scores = warmup.evaluate() if eval_n else []
        save_scores(scores, stage_dir / "eval.json")
        tracker.log({f"eval/{row.task}": row.score for row in scores})
        save_final(model, processor, stage_dir / "final")
    return history


def _evaluate(model: MiMoVL, processor: MiMoVLProcessor, stage: Stage, n: int, progress: bool) -> list[TaskScore]:
    if not n or not stage.eval_tasks:
        return []
    return evaluate(model, processor, list(stage.eval_tasks), n=n, seed=stage.seed, difficulty=stage.difficulty,
                    progress=progress)


def _read_eval(stage_dir: Path) -> list[TaskScore]:
    return load_scores(stage_dir / "eval.json")
