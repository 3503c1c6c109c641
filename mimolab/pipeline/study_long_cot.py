"""Study 1 (notebook 09): long chain of thought in pre-training, against the answer alone.

Both arms run stages 3-4 from the same start checkpoint with the same data mixture, seed and token
budget per step, so they draw the same problems and images (world sample ``i`` of each task); they
differ only in the reply of the reasoning samples (visual_math, text_reasoning): the generator's
chain of thought then the answer (``reasoning_reply: long``), or the empty think block and the
answer (``short``, what the model writes in no-think mode). Short replies are fewer tokens, so at
the same token share the short arm sees more problems: each curve point records how many. A third
arm may drop the reasoning data altogether (its share spread over the rest).

Every arm is scored in its natural mode (the long arm thinks, the short arm answers after an empty
think block) on the reasoning tasks, and as trained on the perception tasks, at the start, at
``stage3_evals`` checkpoints of stage 3 and at the end of stage 4 (on ``final_eval_n`` held-out samples:
the tests use that point), with the mean reply length. Each arm x seed curve is cached as
``<runs>/<arm>-seed<seed>/curve.json`` (written atomically), so seeds can run in separate processes
(``seeds=``) and a last call with every seed only aggregates.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mimolab.eval.harness import chance_levels, evaluate
from mimolab.model.checkpoint import atomic_directory
from mimolab.model.vlm import MiMoVL
from mimolab.pipeline.stages import default_run_dir, get_processor, run_stage
from mimolab.pipeline.studies import (StudySpec, cached_curve, load_study, pick_seeds, save_curve, start_checkpoint,
                                      write_json)
from mimolab.pipeline.study_results import (Runs, claim_verdict, headroom, mean_ci, mean_sd, summarise,
                                            table_section, write_study)
from mimolab.processing import MiMoVLProcessor
from mimolab.settings import RESULTS_DIR, relative_to_runs
from mimolab.train.stage import check_tasks, load_stage

# what an arm may change, nothing else: the tasks it drops, its reasoning replies, and whether it answers the
# reasoning tasks thinking (the default) or in no-think mode
ARM_KEYS = ("drop", "reasoning_reply", "thinking")
REASONING = ("visual_math", "text_reasoning")
STUDY_STAGES = ("stage3_multimodal", "stage4_long_context")


def check_spec(spec: StudySpec) -> None:
    """Arms that change only what this study compares, stage settings that leave the arms' own alone, and a
    curve: the start, ``stage3_evals`` stage-3 checkpoints, the end of stage 4."""
    for arm, overrides in spec.arms.items():
        unknown = sorted(set(overrides) - set(ARM_KEYS))
        if unknown:
            raise ValueError(f"study 'long_cot': arm {arm!r} sets {unknown}; an arm may set only {list(ARM_KEYS)}")
        if overrides.get("reasoning_reply", "long") not in ("long", "short"):
            raise ValueError(f"study 'long_cot': arm {arm!r}: reasoning_reply must be 'long' or 'short'")
        check_tasks(f"study 'long_cot' arm {arm!r}", {}, tuple(overrides.get("drop", ())))
    if not 1 <= spec.stage3_evals <= spec.stage3_steps or spec.stage4_steps < 1:
        raise ValueError("study 'long_cot': needs stage3_steps >= stage3_evals >= 1 and stage4_steps >= 1")
    if spec.difficulty is not None:
        check_tasks("study 'long_cot'", {}, spec.eval_tasks, spec.difficulty)
    fixed = sorted(set(spec.stage_settings) & {"steps", "seed", "shares", "reasoning_reply", "difficulty",
                                               "checkpoint_every"})
    if fixed:
        raise ValueError(f"study 'long_cot': stage_settings may not set {fixed}: the study or its arms set them")


def arm_stage_overrides(spec: StudySpec, profile: str, arm: str, name: str, seed: int) -> dict:
    """The stage settings an arm x seed runs with: the study's steps, seed, difficulty and checkpoints,
    the arm's reply form and, for an arm that drops tasks, their share spread over the rest."""
    overrides = spec.arms[arm]
    stage = load_stage(name, profile)
    steps = spec.stage3_steps if name == STUDY_STAGES[0] else spec.stage4_steps
    every = max(1, spec.stage3_steps // spec.stage3_evals) if name == STUDY_STAGES[0] else steps
    shares = {t: s for t, s in stage.shares.items() if t not in overrides.get("drop", ())}
    total = sum(shares.values())
    settings = {"steps": steps, "seed": seed, "checkpoint_every": every,
                "shares": {t: s / total for t, s in shares.items()},
                "reasoning_reply": overrides.get("reasoning_reply", "long"),
                "warmup_steps": min(stage.warmup_steps, max(1, steps // 10))}
    if spec.difficulty is not None:
        settings["difficulty"] = spec.difficulty
    return {**settings, **spec.stage_settings}


def study_difficulty(spec: StudySpec, profile: str):
    return spec.difficulty if spec.difficulty is not None else load_stage(STUDY_STAGES[1], profile).difficulty


def scores(path: Path, processor, spec: StudySpec, profile: str, thinking: bool, n: int = 0) -> dict:
    """Held-out score and mean reply length (tokens) per task of one checkpoint: the reasoning tasks in
    the arm's mode (``thinking``), the perception tasks as both arms trained them (no think block at all;
    a pre-filled empty one would be a format neither arm has seen on them)."""
    model, difficulty = MiMoVL.from_pretrained(path), study_difficulty(spec, profile)
    rows = [row for tasks, mode in (([t for t in spec.eval_tasks if t in REASONING], thinking),
                                    ([t for t in spec.eval_tasks if t not in REASONING], True)) if tasks
            for row in evaluate(model, processor, tasks, n=n or spec.eval_n, difficulty=difficulty, thinking=mode,
                                progress=False)]
    # on more samples than the other points: also the score on their samples (the first eval_n), the paired
    # comparison with the point before
    first = {f"score@{spec.eval_n}/{r.task}": sum(r.per_sample[:spec.eval_n]) / spec.eval_n for r in rows if r.n > spec.eval_n}
    return {**{f"score/{r.task}": r.score for r in rows}, **first,
            **{f"length/{r.task}": r.response_tokens for r in rows}}


def start_scores(start: Path, processor, spec: StudySpec, profile: str, runs_dir: Path, thinking: bool) -> dict:
    """The start checkpoint's scores in one mode, measured once for every arm and seed (cached)."""
    path = runs_dir / f"start-{'think' if thinking else 'no_think'}.json"
    if not path.exists():
        write_json(path, scores(start, processor, spec, profile, thinking))
    return json.loads(path.read_text())


def samples_seen(checkpoint: Path) -> dict[str, int]:
    """Records each data source had given at a checkpoint (the mixture sampler's position)."""
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    return dict(state["sampler"]["consumed"])


def arm_curve(spec: StudySpec, profile: str, arm: str, seed: int, start: Path, runs_dir: Path,
              tracking: str | None) -> list[dict]:
    """One arm x seed: stages 3-4 from ``start``, scored at the start, at each stage-3 checkpoint and
    at the end of stage 4; the curve is cached in ``curve.json`` and reused while the settings are the same."""
    run_dir = runs_dir / f"{arm}-seed{seed}"
    thinking = bool(spec.arms[arm].get("thinking", True))
    settings = {"stages": {name: arm_stage_overrides(spec, profile, arm, name, seed) for name in STUDY_STAGES},
                "start": relative_to_runs(start), "thinking": thinking,
                "eval_tasks": spec.eval_tasks, "eval_n": spec.eval_n, "final_eval_n": spec.final_eval_n}
    cached = cached_curve(run_dir, settings)
    if cached is not None:
        return cached
    if not (run_dir / "processor" / "tokenizer.json").exists():  # the start's tokenizer, not a new one
        with atomic_directory(run_dir / "processor") as tmp:
            MiMoVLProcessor.from_pretrained(start).save_pretrained(tmp)
    processor = get_processor(run_dir)
    first = start_scores(start, processor, spec, profile, runs_dir, thinking)
    curve = [{"stage": "start", "step": 0, "tokens": 0, **first}]
    init, tokens, seen = start, 0, {}
    for name in STUDY_STAGES:
        result = run_stage(name, profile, run_dir, tracking=tracking, progress=False, init_from=str(init),
                           **arm_stage_overrides(spec, profile, arm, name, seed))
        checkpoints = sorted((run_dir / name / "checkpoints").glob("step-*"))
        for checkpoint in checkpoints if name == STUDY_STAGES[0] else checkpoints[-1:]:
            step = int(checkpoint.name.removeprefix("step-"))
            counts = samples_seen(checkpoint)
            curve.append({"stage": name, "step": step, "tokens": tokens + step * result.stage.tokens_per_step,
                          **{f"samples/{t}": seen.get(t, 0) + counts.get(t, 0) for t in REASONING},
                          **scores(checkpoint / "model", processor, spec, profile, thinking,
                                   spec.final_eval_n if name == STUDY_STAGES[-1] else 0)})
        seen = {t: seen.get(t, 0) + counts.get(t, 0) for t in REASONING}
        tokens += result.stage.steps * result.stage.tokens_per_step
        init = result.final
    save_curve(run_dir, settings, curve)
    return curve


def start_headroom(runs: Runs, spec: StudySpec, runs_dir: Path, chance: dict[str, float]) -> list[dict]:
    """``study_results.headroom`` with the start checkpoint's score in each mode the arms are scored in
    (thinking and no-think differ on the reasoning tasks), not their mean."""
    modes = {mode: json.loads((runs_dir / f"start-{mode}.json").read_text())
             for mode in ("think", "no_think") if (runs_dir / f"start-{mode}.json").exists()}
    rows = headroom(runs, list(spec.eval_tasks), chance)
    return [{"task": r["task"], **{f"start, {m}": v.get(f"score/{r['task']}") for m, v in modes.items()},
             **{k: v for k, v in r.items() if k not in ("task", "start")}} for r in rows]


def final_means(runs: Runs, key: str) -> dict[str, float]:
    """Per arm, the mean over seeds of ``key`` at each seed's last curve point."""
    return {arm: mean_sd([c[-1][key] for c in seeds.values()])[0] for arm, seeds in runs.items()
            if all(c[-1].get(key) is not None for c in seeds.values())}


def run_long_cot_study(profile: str, *, out: Path = RESULTS_DIR, runs_dir: Path | None = None,
                       tracking: str | None = None, progress: bool = True, seeds=None,
                       study: str | Path = "long_cot") -> dict:
    """Every arm x seed (or the ``seeds`` given) from the study's start checkpoint; with every seed, the
    results (``out/long_cot.json|md|png``): headroom, per-arm curves, the tests with CI and MDE, reply
    lengths and problems seen. With a subset of seeds, the curves only (cached for the final call).
    ``study``: another study file of the same shape (the pilot's, ``experiments/studies/pilots/``)."""
    spec = load_study(study, profile)
    check_spec(spec)
    chosen = pick_seeds(spec, seeds)
    tasks = list(spec.eval_tasks)
    start = start_checkpoint(spec, profile, progress)
    runs_dir = Path(runs_dir or default_run_dir(profile).parent / "studies" / "long_cot")
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs: Runs = {}
    for arm, seed in tqdm([(a, s) for a in spec.arms for s in chosen], desc="long_cot", disable=not progress):
        runs.setdefault(arm, {})[seed] = arm_curve(spec, profile, arm, seed, start, runs_dir, tracking)
    if set(chosen) != set(spec.seeds):
        return {"study": "long_cot", "profile": profile, "seeds_run": list(chosen), "runs": runs}
    chance = chance_levels(tasks, spec.final_eval_n or spec.eval_n, difficulty=study_difficulty(spec, profile))
    result = {"study": "long_cot", "profile": profile, "what": spec.what, "start": relative_to_runs(start),
              "difficulty": study_difficulty(spec, profile), "chance": chance,
              "headroom": start_headroom(runs, spec, runs_dir, chance),
              "pilot": spec.pilot, "length": {t: final_means(runs, f"length/{t}") for t in tasks},
              "samples_seen": {t: final_means(runs, f"samples/{t}") for t in REASONING},
              **summarise(runs, tasks, list(spec.compare), spec.test)}
    result["claims"] = long_cot_claims(result, runs, spec.eval_n)
    paths = write_study("long_cot", result, runs, tasks, "tokens", out)
    paths["md"].write_text(paths["md"].read_text() + "\n" + details_markdown(result))
    return {**result, "runs": runs}


def details_markdown(result: dict) -> str:
    """What the shared results tables leave out: each arm's reply length and problems seen at the end."""
    rows = [{"arm": arm, **{f"reply tokens, {t}": v.get(arm) for t, v in result["length"].items()},
             **{f"{t} problems seen": v.get(arm) for t, v in result["samples_seen"].items()}}
            for arm in result["samples_seen"][REASONING[0]]]
    return "\n".join(table_section("Reply length and problems seen at the end (mean over seeds)", rows)) + "\n"


def long_cot_claims(result: dict, runs: Runs, eval_n: int = 0, margin: float = 0.10) -> list[dict]:
    """The report's claims against the measured numbers: agrees / disagrees / cannot tell, from the 95% CIs.

    1. Long CoT beats the answer alone on reasoning (per reasoning task, long vs short arm).
    2. Reasoning keeps improving through stage 4: the long arm's change from the end of stage 3 to the end,
       on the same ``eval_n`` samples (the last point's ``score@<eval_n>``, when it was scored on more).
    3. Perception does not suffer (within ``margin``): long vs short on the other tasks."""
    claims = []
    for t in result["tests"]:
        if t["baseline"] == "short_cot" and t["arm"] == "long_cot":
            reasoning = t["task"] in REASONING
            claim = "long CoT beats the answer alone" if reasoning else f"perception not hurt by more than {margin}"
            low = 0.0 if reasoning else -margin
            claims.append({"claim": claim, "task": t["task"], "diff": t["diff"], "ci": [t["ci_low"], t["ci_high"]],
                           "verdict": claim_verdict(t["ci_low"], t["ci_high"], agrees_above=low, disagrees_below=low)})
    for task in (t for t in REASONING if t in result["chance"]):
        same = lambda point: point.get(f"score@{eval_n}/{task}", point[f"score/{task}"])  # noqa: E731
        gain = mean_ci([same(c[-1]) - c[-2][f"score/{task}"] for c in runs.get("long_cot", {}).values()])
        claims.append({"claim": "still improving through stage 4 (long arm)", "task": task, "diff": gain["diff"],
                       "ci": [gain["ci_low"], gain["ci_high"]],
                       "verdict": claim_verdict(gain["ci_low"], gain["ci_high"], agrees_above=0.0,
                                                disagrees_below=0.0)})
    return claims


__all__ = ["arm_stage_overrides", "long_cot_claims", "run_long_cot_study"]
