"""The pilot behind experiments/studies/grpo_modes.yaml and interference.yaml: held-out scores of the
start checkpoint, GRPO step and scoring times, reply lengths, KL and clip fraction at study-sized lr.

    OMP_NUM_THREADS=1 python experiments/studies/pilots/grpo.py START OUT [--budget 660]

START: a stage-4 checkpoint (the pipeline's cpu stage 4). Two parts, as they ran (one process each):
part 1 (n 40): lr 3e-5, five tasks, vanilla then on-policy, 20 steps each, scores every 10 steps;
part 2 (n 80): lr 2e-5, vanilla on grounding + chart + text_reasoning (16 steps), and the interference
mixture counting + chart + visual_math on-policy (20 steps), scores every 8 steps. Every record
(one JSON line each, with wall and process-CPU seconds) goes to OUT/log.jsonl.
"""

import argparse
import json
import time
from pathlib import Path

from mimolab.eval.harness import chance_levels, evaluate
from mimolab.model.vlm import MiMoVL
from mimolab.processing import MiMoVLProcessor
from mimolab.rl.grpo import load_grpo_config
from mimolab.rl.trainer import GRPOTrainer

FIVE = ("grounding", "counting", "chart", "text_reasoning", "visual_math")
PARTS = {  # part -> (n, eval_every, lr, runs: (name, updates_per_batch, steps, tasks trained and scored))
    1: (40, 10, 3e-5, [("vanilla", 4, 20, FIVE), ("on_policy", 1, 20, FIVE)]),
    2: (80, 8, 2e-5, [("vanilla_modes", 4, 16, ("grounding", "chart", "text_reasoning")),
                      ("mixed_interf", 1, 20, ("counting", "chart", "visual_math"))]),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("start")
    parser.add_argument("out")
    parser.add_argument("--part", type=int, choices=sorted(PARTS), required=True)
    parser.add_argument("--budget", type=float, default=660.0, help="stop after this many wall seconds")
    args = parser.parse_args()
    out, t0 = Path(args.out), time.time()
    out.mkdir(parents=True, exist_ok=True)

    def emit(**record) -> None:
        record.update(t=round(time.time() - t0, 1), cpu=round(time.process_time(), 1), part=args.part)
        print(json.dumps(record), flush=True)
        with open(out / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")

    n, every, lr, runs = PARTS[args.part]
    difficulty = load_grpo_config("grpo_on_policy", "cpu").difficulty
    emit(what="chance", **chance_levels(list(FIVE), n, difficulty=difficulty))
    processor = MiMoVLProcessor.from_pretrained(args.start)

    def measure(model, arm: str, step: int, tasks) -> None:
        for task in tasks:
            t = time.time()
            (row,) = evaluate(model, processor, [task], n=n, seed=0, difficulty=difficulty, progress=False)
            emit(what="eval", arm=arm, step=step, task=task, score=row.score, secs=round(time.time() - t, 1))

    if args.part == 1:
        measure(MiMoVL.from_pretrained(args.start), "start", 0, FIVE)
    for arm, updates, steps, tasks in runs:
        model = MiMoVL.from_pretrained(args.start)
        cfg = load_grpo_config("grpo_on_policy", "cpu", seed=0, steps=steps, updates_per_batch=updates, lr=lr,
                               prompts_per_step=16, rollout_dtype="bfloat16", tasks=tuple((t, 1.0) for t in tasks))
        with GRPOTrainer(model, processor, cfg, out / f"run-{arm}") as trainer:
            for step in range(1, steps + 1):
                t = time.time()
                record = trainer.step()
                emit(what="step", arm=arm, secs=round(time.time() - t, 1),
                     **{k: v for k, v in record.items() if isinstance(v, (int, float)) or v is None})
                if step % every == 0 or step == steps:
                    measure(model, arm, step, tasks[:4])
                if time.time() - t0 > args.budget:
                    emit(what="budget stop", arm=arm, step=step)
                    return


if __name__ == "__main__":  # the rewards' fork server imports this module: nothing may run on import
    main()
