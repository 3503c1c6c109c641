"""MORL as the pipeline's last stage: on-policy GRPO from the final pre-training checkpoint, with the
RL tasks scored on the same held-out samples before and after (so the change is a paired one).

    result = run_morl("cpu", start="runs/cpu/pretrain/stage4_long_context/final", run_dir="runs/cpu/pretrain/morl")

The run directory holds GRPO's ``metrics.jsonl`` (reward and response length per task, per step),
its checkpoints (a killed run resumes), ``final/`` (model and processor: the demo's newest
checkpoint) and ``morl.json`` (config, scores before and after, the paired changes).

With ``lora_rank > 0`` GRPO trains peft adapters on ``lora_parts`` only (the reference policy is the
model with its adapters off); ``final/`` holds them merged into the weights, a plain model.
"""

from __future__ import annotations

import json
from pathlib import Path

from mimolab.eval.harness import evaluate, paired_change


def run_morl(profile: str, start: str | Path, run_dir: str | Path, *, config: str = "grpo_on_policy",
             tracking: str | None = None, progress: bool = True, eval_n: int = 40, log=None,
             rewards=None, **overrides) -> dict:
    """GRPO from ``start`` with ``experiments/rl/<config>.yaml`` at ``profile``; returns ``morl.json``'s
    content (read back when the run finished before)."""
    from mimolab.model.vlm import MiMoVL
    from mimolab.processing import MiMoVLProcessor
    from mimolab.rl.grpo import load_grpo_config
    from mimolab.rl.trainer import GRPOTrainer
    from mimolab.train.lora import has_lora, merge_lora
    from mimolab.train.pretrain import save_final
    from mimolab.train.tracking import Tracker

    run_dir = Path(run_dir)
    done = run_dir / "morl.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = load_grpo_config(config, profile, **overrides)
    tasks = [task for task, _ in cfg.tasks]
    model, processor = MiMoVL.from_pretrained(start), MiMoVLProcessor.from_pretrained(start)
    before_file = run_dir / "eval_before.json"  # kept, so a resumed run compares with the same numbers
    if not before_file.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = evaluate(model, processor, tasks, n=eval_n, seed=cfg.seed, difficulty=cfg.difficulty, progress=progress)
        before_file.write_text(json.dumps([r.as_dict() for r in rows]))
    before = json.loads(before_file.read_text())
    with Tracker(run_dir, {**cfg.__dict__, "start": str(start)}, mode=tracking, name=f"{profile}-morl",
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
    after = [r.as_dict() for r in evaluate(model, processor, tasks, n=eval_n, seed=cfg.seed,
                                           difficulty=cfg.difficulty, progress=progress)]
    result = {"profile": profile, "config": config, "start": str(start), "steps": cfg.steps,
              "before": before, "after": after, "changes": [paired_change(b, a) for b, a in zip(before, after)]}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(done)
    return result


__all__ = ["run_morl"]
