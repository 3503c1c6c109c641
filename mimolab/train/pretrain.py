"""The pre-training pipeline: stages from ``experiments/pretrain/*.yaml``, each starting from the
previous stage's final checkpoint, one run directory for the lot.

    run_dir/
      processor/                      the world tokenizer + image/video settings (made once)
      <stage>/stage.yaml              the resolved stage (profile applied)
      <stage>/metrics.jsonl           one record per step (W&B too, offline unless a key is set)
      <stage>/checkpoints/step-N/     model (Qwen2.5-VL format) + trainer_state.pt: resumable
      <stage>/final/                  model + processor: loads in mimolab and transformers
      <stage>/eval.json               held-out scores on the stage's target tasks
      report.md, figures/             written by ``mimolab.train.report``

Re-running a stage whose ``final/`` exists returns it; a stage killed half-way resumes from its
last checkpoint with the losses an uninterrupted run would have had.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from mimolab.config import MiMoVLConfig
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.data.world import TASKS
from mimolab.model.checkpoint import atomic_directory
from mimolab.model.vlm import MiMoVL
from mimolab.processing import MiMoVLProcessor
from mimolab.train.loop import Trainer
from mimolab.train.stage import STAGE_DIR, Stage, load_stage
from mimolab.train.tracking import Tracker

STAGES = ("stage0_llm", "stage0_vision", "stage1_projector", "stage2_alignment", "stage3_multimodal", "stage4_long_context")


@dataclass
class StageResult:
    name: str
    stage: Stage
    final: Path  # the stage's final checkpoint directory
    history: list[dict]  # this process's records (empty when the stage was already done)
    eval: list[dict]  # held-out scores on the stage's eval_tasks (may be empty)


def runs_root() -> Path:
    """``$MIMOLAB_RUNS``, by default the repository's ``runs/``: every run directory lives below it."""
    return Path(os.environ.get("MIMOLAB_RUNS", STAGE_DIR.parents[1] / "runs"))


def default_run_dir(profile: str) -> Path:
    """``$MIMOLAB_RUNS/<profile>/pretrain``."""
    return runs_root() / profile / "pretrain"


def stages_for(profile: str) -> list[str]:
    """The pipeline's stages that have settings for ``profile`` (stage 0 exists for small profiles only)."""
    return [name for name in STAGES if profile in (yaml.safe_load((STAGE_DIR / f"{name}.yaml").read_text())
                                                   .get("profiles") or {})]


def get_processor(run_dir: Path) -> MiMoVLProcessor:
    """The run's processor: made (tokenizer trained on the world's text) once, then reloaded."""
    path = run_dir / "processor"
    if not (path / "tokenizer.json").exists():
        with atomic_directory(path) as tmp:
            world_processor(world_tokenizer()).save_pretrained(tmp)
    return MiMoVLProcessor.from_pretrained(path)


def save_final(model: MiMoVL, processor: MiMoVLProcessor, path: Path) -> Path:
    """Model and processor into one directory, atomically (a reader never sees half of it)."""
    from mimolab.train.loop import save_model

    with atomic_directory(path) as tmp:
        save_model(model, tmp)  # (save_pretrained writes its own temporary directory and puts it at tmp)
        processor.save_pretrained(tmp)
    return path


def initial_model(stage: Stage, profile: str, run_dir: Path, **run_kwargs) -> MiMoVL:
    """Fresh weights (seeded), the final checkpoint of a named earlier stage (run first if
    missing), or a checkpoint directory."""
    if stage.init_from is None:
        torch.manual_seed(stage.seed)
        return MiMoVL(MiMoVLConfig.from_name(profile))
    if stage.init_from in STAGES:
        return MiMoVL.from_pretrained(run_stage(stage.init_from, profile, run_dir, **run_kwargs).final)
    path = Path(stage.init_from).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"stage {stage.name!r} starts from {path}, which is not a checkpoint directory")
    return MiMoVL.from_pretrained(path)


def run_stage(name: str, profile: str = "cpu", run_dir: str | Path | None = None, *, tracking: str | None = None,
              progress: bool = True, eval_n: int = 0, accelerator=None, log=None, **overrides) -> StageResult:
    """Train one stage (after the stages it starts from), evaluate it, and return its final checkpoint."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(profile)
    stage = load_stage(name, profile, **overrides)
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
    sampler = world_mixture(stage.shares, processor, model.config, max_length=stage.row_tokens, seed=stage.seed,
                            difficulty=stage.difficulty, text_only=stage.text_only)
    with tracker:
        trainer = Trainer(model, stage, sampler, stage_dir, tracker=tracker, accelerator=accelerator)
        trainer.resume()
        history = trainer.train(progress=progress, log=log)
        if is_main:
            tracker.summary({"skipped_records": dict(sampler.skips.counts)})
            scores = _evaluate(model, processor, stage, eval_n, progress)
            (stage_dir / "eval.json").write_text(json.dumps(scores, indent=2))
            if scores:
                tracker.log({f"eval/{row['task']}": row["score"] for row in scores})
            save_final(model, processor, final)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return StageResult(name, stage, final, history, _read_eval(stage_dir))


def _warm_up_vision(model: MiMoVL, processor: MiMoVLProcessor, stage: Stage, stage_dir: Path, tracker: Tracker,
                    eval_n: int, progress: bool, log) -> list[dict]:
    """The small profiles' vision warm-up (one process): train, score the held-out scenes, save."""
    from mimolab.train.vision_warmup import VisionWarmup

    with tracker:
        warmup = VisionWarmup(model, stage, processor.image_processor, stage_dir, tracker)
        warmup.resume()
        history = warmup.train(progress=progress, log=log)
        scores = warmup.evaluate() if eval_n else []
        (stage_dir / "eval.json").write_text(json.dumps(scores, indent=2))
        tracker.log({f"eval/{row['task']}": row["score"] for row in scores})
        save_final(model, processor, stage_dir / "final")
    return history


def _evaluate(model: MiMoVL, processor: MiMoVLProcessor, stage: Stage, n: int, progress: bool) -> list[dict]:
    if not n or not stage.eval_tasks:
        return []
    from mimolab.eval import evaluate

    return [row.as_dict() for row in evaluate(model, processor, list(stage.eval_tasks), n=n, seed=stage.seed,
                                              difficulty=stage.difficulty, progress=progress)]


def _read_eval(stage_dir: Path) -> list[dict]:
    path = stage_dir / "eval.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_pipeline(profile: str = "cpu", run_dir: str | Path | None = None, *, tracking: str | None = None,
                 progress: bool = True, eval_n: int = 32, final_eval_n: int | None = None, morl: bool = True,
                 morl_eval_n: int | None = None, studies_dir: str | Path | None = None) -> Path:
    """Every stage of the profile, the held-out evaluation on all tasks, MORL (GRPO from the last
    stage, RL tasks scored before and after on ``morl_eval_n`` samples each; ``morl=False`` stops
    before it) and the report, which ends with the studies' summary read from ``studies_dir`` (default
    ``experiments/results``)."""
    from mimolab.eval import evaluate
    from mimolab.rl.morl import run_morl
    from mimolab.studies import RESULTS_DIR
    from mimolab.train.report import write_report

    run_dir = Path(run_dir) if run_dir else default_run_dir(profile)
    results = [run_stage(name, profile, run_dir, tracking=tracking, progress=progress, eval_n=eval_n)
               for name in stages_for(profile)]
    final_scores = run_dir / "final_eval.json"
    if not final_scores.exists():
        last, n = results[-1], final_eval_n or eval_n
        # the last stage already scored its own tasks on these very samples (same model, seed, n, difficulty)
        done = {row["task"]: row for row in last.eval if row["n"] == n and last.stage.seed == 0}
        model = MiMoVL.from_pretrained(last.final)
        scores = {row.task: row.as_dict() for row in evaluate(
            model, MiMoVLProcessor.from_pretrained(last.final), [t for t in TASKS if t not in done], n=n,
            difficulty=last.stage.difficulty, progress=progress)}
        final_scores.write_text(json.dumps([scores.get(t) or done[t] for t in TASKS], indent=2))
    rl = run_morl(profile, results[-1].final, run_dir / "morl", tracking=tracking, progress=progress,
                  eval_n=morl_eval_n or final_eval_n or eval_n) if morl else None
    return write_report(run_dir, profile, results, json.loads(final_scores.read_text()), rl,
                        studies_dir=Path(studies_dir) if studies_dir else RESULTS_DIR)
