"""MORL as the pipeline's last stage: on-policy GRPO from the final pre-training checkpoint, with the
RL tasks scored on the same held-out samples before and after (so the change is a paired one).

    result = run_morl("cpu", start="runs/cpu/pretrain/stage4_long_context/final", run_dir="runs/cpu/pretrain/morl")

The run directory holds GRPO's ``metrics.jsonl`` (reward and response length per task, per step),
its checkpoints (a killed run resumes), ``final/`` (model and processor: the demo's newest
checkpoint) and ``morl.json`` (``MorlResult``: config, scores before and after, the paired changes).

With ``lora_rank > 0`` GRPO trains peft adapters on ``lora_parts`` only (the reference policy is the
model with its adapters off); ``final/`` holds them merged into the weights, a plain model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mimolab.eval.harness import evaluate
from mimolab.eval.results import PairedChange, TaskScore, load_scores, paired_change, save_scores
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.stages import check_eval_n
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import load_grpo_config
from mimolab.rl.trainer import GRPOTrainer
from mimolab.settings import relative_to_runs
from mimolab.train.checkpoints import save_final
from mimolab.train.lora import has_lora, merge_lora
from mimolab.train.tracking import Tracker


@dataclass
class MorlResult:
    """What ``morl.json`` holds: the run's settings and the RL tasks' held-out scores before and after."""

    profile: str
    config: str
    start: str  # relative to the runs root (results files carry no machine paths)
    steps: int
    before: list[TaskScore]
    after: list[TaskScore]

    @property
    def changes(self) -> list[PairedChange]:
        return [paired_change(b, a) for b, a in zip(self.before, self.after)]

    def as_dict(self) -> dict:
        return {"profile": self.profile, "config": self.config, "start": self.start, "steps": self.steps,
                "before": [r.as_dict() for r in self.before], "after": [r.as_dict() for r in self.after],
                "changes": [c.as_dict() for c in self.changes]}

    @classmethod
    def load(cls, path: str | Path) -> MorlResult:
        record = json.loads(Path(path).read_text())
        return cls(record["profile"], record["config"], record["start"], record["steps"],
                   [TaskScore.from_dict(r) for r in record["before"]], [TaskScore.from_dict(r) for r in record["after"]])


def run_morl(profile: str, start: str | Path, run_dir: str | Path, *, config: str = "grpo_on_policy",
             tracking: str | None = None, progress: bool = True, eval_n: int = 40, log=None,
             rewards=None, **overrides) -> MorlResult:
    """GRPO from ``start`` with ``experiments/rl/<config>.yaml`` at ``profile``; returns what
    ``morl.json`` holds (read back when the run finished before)."""
    check_eval_n("eval_n", eval_n)  # before the run directory is touched
    run_dir = Path(run_dir)
    done = run_dir / "morl.json"
    if done.exists():
        return MorlResult.load(done)
    cfg = load_grpo_config(config, profile, **overrides)
    tasks = [task for task, _ in cfg.tasks]
    model, processor = MiMoVL.from_pretrained(start), MiMoVLProcessor.from_pretrained(start)
    before_file = run_dir / "eval_before.json"  # kept, so a resumed run compares with the same numbers
    if not before_file.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_scores(evaluate(model, processor, tasks, n=eval_n, seed=cfg.seed, difficulty=cfg.difficulty,
                             progress=progress), before_file)
    before = load_scores(before_file)
    with Tracker(run_dir, {**cfg.__dict__, "start": relative_to_runs(start)}, mode=tracking, name=f"{profile}-morl",
                 group=f"pipeline-{profile}") as tracker:
        trainer = GRPOTrainer(model, processor, cfg, run_dir, rewards=rewards, tracker=tracker)
        try:
            trainer.resume()
            trainer.train(progress=progress, log=log, checkpoint_every=cfg.checkpoint_every)
        finally:
            trainer.close()
    if has_lora(model):  # the trainer added them (cfg.lora_rank)
        merge_lora(model)
    save_final(model, processor, run_dir / "final")
    after = evaluate(model, processor, tasks, n=eval_n, seed=cfg.seed, difficulty=cfg.difficulty, progress=progress)
    result = MorlResult(profile, config, relative_to_runs(start), cfg.steps, before, after)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.as_dict(), indent=2))
    tmp.replace(done)
    return result


__all__ = ["MorlResult", "run_morl"]
