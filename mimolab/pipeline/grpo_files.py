"""GRPO on a prompt file (``mimolab grpo``): your prompts, your rewards, the pipeline's MORL loop.

    result = run_grpo_files("path/to/checkpoint", "prompts.jsonl", ["verifiable", "my_rewards:exact"],
                            "runs/grpo/mine", steps=100, eval_split=0.1)
    print(changes_table(result.morl.changes))

A prompt record is a JSONL line (or a ``datasets`` row) of the chat schema whose turns end before the
reply (a reply turn, if there is one, becomes the ``reference`` column), plus any columns its rewards
need: ``task`` (routes it to the rewards of that task; default: the file's stem), ``answer`` (a count,
a box, a span, a number...) or any other field. Rewards get them as keyword columns, as TRL passes a
data set's columns (``mimolab.rl.trainer.reward_columns``), so a TRL reward function plugs in. The
policy sees the user turns (as in MORL's rollouts and the evaluation harness): a system turn of a
record is not part of its prompt; the checkpoint's chat template supplies its default one.

Rewards are the service's specs (``mimolab.rl.service.load_rewards``): ``verifiable``, ``format``,
``reward_model=DIR[:tasks]``, ``module:function``; or the URL of a running reward service; or, from
Python, reward functions themselves. Before anything loads, every record is checked: one that is not a
prompt, whose task no reward scores, or which lacks a column its reward needs, stops the run with an
error naming the record and the column (``check_prompts``).

``eval_split`` keeps that share of the records (spread over the file, ``mimolab.data.files.is_held_out``) for
a greedy before/after evaluation with the same rewards, paired by record and reported as the
pipeline's MORL reports it (``MorlResult``: per task, ``TaskScore`` before and after, ``PairedChange``).
Chance is the best blind answer among the held-out records' reference replies (0 when they have none).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mimolab.data.files import PromptFile, is_held_out, prompt_sample, read_records
from mimolab.data.mixture import BadRecord
from mimolab.data.schema import check_record
from mimolab.demo import load_checkpoint
from mimolab.eval.harness import generate_replies
from mimolab.eval.results import TaskScore, load_scores, mean_stderr, save_scores
from mimolab.pipeline.morl import MorlResult
from mimolab.pipeline.sft import check_settings
from mimolab.rl.grpo import load_grpo_config
from mimolab.rl.rewards import Reward
from mimolab.rl.service import RemoteRewards, RewardRouter, load_rewards, reward_name
from mimolab.rl.trainer import GRPOTrainer, reward_columns
from mimolab.settings import check_value, relative_to_runs, runs_root
from mimolab.train.checkpoints import save_final
from mimolab.train.lora import has_lora, merge_lora
from mimolab.train.tracking import StepTimes, Tracker, read_metrics

MODES = {"on_policy": 1, "vanilla": 4}  # updates per rollout batch (experiments/rl/grpo_on_policy.yaml)
ALWAYS = {"completions", "task", "samples", "prompts", "kwargs"}  # columns every sample has
# What mimolab's verifiable rewards read (mimolab/rl/rewards.py, SCORERS): per task, alternatives of
# columns ("answer.<key>": a key of the answer object), any one of which suffices
ANSWER_NEEDS = {
    "visual_math": [["answer.number"]], "text_reasoning": [["answer.number"]], "grounding": [["answer.bbox_2d"]],
    "counting": [["answer.count"]], "gui": [["answer.action", "answer.bbox_2d"], ["answer.action", "answer.text"]],
    "video": [["answer.span"], ["answer.events", "reference"]], "chart": [["answer.number"], ["answer.text"]],
    "ocr": [["answer.text"], ["answer.boxes", "reference"]], "interleaved": [["reference"]],
}


def load_reward_specs(specs: list, timeout: float = 5.0) -> RewardRouter | RemoteRewards:
    """The rewards of specs (``load_rewards``'s, or a service URL) and of reward functions given as such."""
    if not specs:
        raise ValueError("give at least one reward (--reward verifiable, format, reward_model=DIR, module:function "
                         "or a reward service URL)")
    urls = [s for s in specs if isinstance(s, str) and s.startswith(("http://", "https://"))]
    local = load_rewards([s for s in specs if isinstance(s, str) and s not in urls], timeout=timeout)
    local += [s for s in specs if not isinstance(s, str)]
    if len(urls) == 1 and not local:
        return RemoteRewards(urls[0])  # its own breakdown per component
    return RewardRouter(local + [RemoteRewards(u) for u in urls])


def _has(record: dict, column: str) -> bool:
    if column == "reference":
        return bool(record.get("messages")) and record["messages"][-1].get("role") == "assistant"
    if column.startswith("answer."):
        return isinstance(record.get("answer"), dict) and column[len("answer."):] in record["answer"]
    return column in record


def required_columns(fn) -> list[list[str]]:
    """Alternatives of columns a reward needs for a task: mimolab's verifiable rewards by the table above,
    any other function by the parameters of its signature that have no default."""
    if isinstance(fn, Reward):
        return [] if fn.scorer else None  # None: ask ANSWER_NEEDS per task
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the completions
    except (TypeError, ValueError):
        return []
    needed = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
              and p.name not in ALWAYS]
    return [needed] if needed else []


def _missing(record: dict, alternatives: list[list[str]]) -> list[str]:
    """The columns of the closest alternative that the record lacks ([] when one is complete)."""
    gaps = [[c for c in alt if not _has(record, c)] for alt in alternatives]
    return min(gaps, key=len) if gaps else []


def _serves(fn, task: str) -> bool:
    tasks = getattr(fn, "tasks", None)
    return tasks is None or task in tasks


def check_prompts(records: list, rewards, where: str, default_task: str) -> None:
    """Raise ``ValueError`` naming the record (its ``id``, else its line) and what is wrong, for the first
    record that is not a prompt, whose task no reward scores, or that lacks a column a reward needs."""
    fns = rewards.rewards if isinstance(rewards, RewardRouter) else []
    names = [reward_name(fn) for fn in fns]
    for line, record in enumerate(records, 1):
        ident = f"{where}: record {record.get('id')!r} (line {line})" if isinstance(record, dict) and record.get(
            "id") is not None else f"{where}: line {line}"
        try:
            check_record(record)
        except BadRecord as err:
            raise ValueError(f"{ident}: {err}") from None
        if not any(m["role"] == "user" for m in record["messages"]):
            raise ValueError(f"{ident}: no user turn to answer")
        task = record.get("task", default_task)
        serving = [fn for fn in fns if _serves(fn, task)]
        if fns and not serving:
            raise ValueError(f"{ident}: task {task!r} has no reward among {names} (set the record's 'task' to one "
                             f"a reward scores, or add a reward for it)")
        for fn in serving:
            needs = required_columns(fn)
            needs = ANSWER_NEEDS.get(task, []) if needs is None else needs
            if gap := _missing(record, needs):
                raise ValueError(f"{ident}: no column {gap[0]!r}, which reward {reward_name(fn)!r} needs for task "
                                 f"{task!r} (needs {' or '.join('+'.join(a) for a in needs)})")


def _probe_remote(rewards: RemoteRewards, records: list, where: str, default_task: str) -> None:
    """A service's rewards cannot be read: score every record's reference (or an empty reply) once, and
    refuse a record that no reward scored."""
    samples = [prompt_sample(r, default_task) for r in records]
    batch = rewards.score([s.reply if s.messages[-1]["role"] == "assistant" else "" for s in samples],
                          **reward_columns(samples))
    for i, record in enumerate(records):
        if all(values[i] is None for values in batch.components.values()):
            raise ValueError(f"{where}: line {i + 1}: task {record.get('task', default_task)!r} has no reward "
                             f"at {rewards.url} (rewards: {sorted(batch.components)})")


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_prompts(model, processor, samples: list, rewards, *, max_new_tokens: int, batch_size: int = 16
                     ) -> list[TaskScore]:
    """Greedy replies to each held-out prompt scored by ``rewards`` (the reward total), per task, with
    chance (the best blind reference reply) beside it; per-sample scores in record order."""
    replies = generate_replies(model, processor, samples, batch_size, max_new_tokens=max_new_tokens)
    totals = rewards.score(replies, **reward_columns(samples)).total
    rows = []
    for task in dict.fromkeys(s.task for s in samples):
        idx = [i for i, s in enumerate(samples) if s.task == task]
        group, scores = [samples[i] for i in idx], [totals[i] for i in idx]
        blind = _blind(rewards, group)
        mean, _ = mean_stderr(scores)
        _, err = mean_stderr([a - b for a, b in zip(scores, blind)])
        rows.append(TaskScore(task, "reward", mean, err, sum(blind) / len(blind), len(idx), scores))
    return rows


def _blind(rewards, samples: list, most: int = 16) -> list[float]:
    """Per-sample rewards of the one reference reply that, given to every sample, scores best."""
    candidates = list(dict.fromkeys(s.reply for s in samples if s.messages[-1]["role"] == "assistant"))[:most]
    best = [0.0] * len(samples)
    for reply in candidates:
        scores = rewards.score([reply] * len(samples), **reward_columns(samples)).total
        best = scores if sum(scores) > sum(best) else best
    return best


@dataclass
class PromptRLResult:
    """What ``grpo.json`` holds: MORL's record (held-out scores before and after) and the run's figures."""

    morl: MorlResult
    prompts: str
    rewards: list[str]
    final: str
    reward_first: float | None = None  # mean training reward of the first tenth of the steps
    reward_last: float | None = None  # of the last tenth
    seconds_per_step: float | None = None  # median wall time of the steps this process ran
    first_ratio_max_dev: float | None = None  # the first update's largest |ratio - 1| (0 on-policy)
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {**asdict(self), "morl": self.morl.as_dict()}

    @classmethod
    def load(cls, path: str | Path) -> PromptRLResult:
        record = json.loads(Path(path).read_text())
        morl = record.pop("morl")
        return cls(MorlResult(morl["profile"], morl["config"], morl["start"], morl["steps"],
                              [TaskScore.from_dict(r) for r in morl["before"]],
                              [TaskScore.from_dict(r) for r in morl["after"]]), **record)


def run_grpo_files(checkpoint: str | Path, prompts: str | Path, rewards: list, out: str | Path | None = None, *,
                   profile: str = "cpu", mode: str = "on_policy", eval_split: float = 0.0, eval_max: int = 200,
                   merge: bool = False, reward_timeout: float = 5.0, tracking: str | None = None,
                   progress: bool = True, log=None, **overrides) -> PromptRLResult:
    """GRPO from ``checkpoint`` on the records of ``prompts`` (module docstring), with the settings of
    ``experiments/rl/grpo_on_policy.yaml`` at ``profile`` and ``overrides`` (``steps``, ``group_size``,
    ``lora_rank``, ``lr``, ``prompts_per_step``, ``max_new_tokens``...); ``mode="vanilla"``: 4 updates
    per rollout batch. Returns what ``grpo.json`` holds (read back when the run finished before)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {sorted(MODES)}")
    check_value("grpo", "eval_split", eval_split, low=0, high=0.5)
    cfg = load_grpo_config("grpo_on_policy", profile, updates_per_batch=MODES[mode], **overrides)
    prompts = Path(prompts)
    records, task = read_records(prompts), prompts.stem
    router = load_reward_specs(list(rewards), timeout=reward_timeout)
    try:
        check_prompts(records, router, str(prompts), task)
        if isinstance(router, RemoteRewards):
            _probe_remote(router, records, str(prompts), task)
        train = [r for i, r in enumerate(records) if not is_held_out(i, eval_split)]
        held = [r for i, r in enumerate(records) if is_held_out(i, eval_split)][:eval_max]
        if not train:
            raise ValueError(f"{prompts}: no record left for training after the held-out split {eval_split}")
        out = Path(out) if out else runs_root() / "grpo" / f"{Path(checkpoint).resolve().name}-{prompts.stem}"
        settings = {"checkpoint": str(Path(checkpoint).resolve()), "prompts": str(prompts.resolve()),
                    "rewards": [s if isinstance(s, str) else reward_name(s) for s in rewards], "profile": profile,
                    "mode": mode, "eval_split": eval_split, "eval_max": eval_max, "merge": merge,
                    **{k: v for k, v in cfg.__dict__.items()}}
        check_settings(out, json.loads(json.dumps(settings)), "grpo.yaml")
        if (out / "grpo.json").exists():
            return PromptRLResult.load(out / "grpo.json")
        return _run(checkpoint, prompts, router, out, cfg, train, held, task, settings, merge, tracking, progress,
                    log)
    finally:
        router.close()


def _run(checkpoint, prompts: Path, router, out: Path, cfg, train: list, held: list, task: str, settings: dict,
         merge: bool, tracking, progress, log) -> PromptRLResult:
    model, processor = load_checkpoint(checkpoint)
    eval_samples = [prompt_sample(r, task) for r in held]
    before_file = out / "eval_before.json"  # kept, so a resumed run compares with the same numbers
    if eval_samples and not before_file.exists():
        save_scores(evaluate_prompts(model, processor, eval_samples, router, max_new_tokens=cfg.max_new_tokens),
                    before_file)
    clock = StepTimes(log)
    with Tracker(out, settings, mode=tracking, name=f"grpo-{out.name}", group="grpo") as tracker:
        trainer = GRPOTrainer(model, processor, cfg, out, rewards=router, tracker=tracker,
                              prompts=PromptFile(train, seed=cfg.seed, default_task=task))
        trainer.resume()
        clock.start()
        trainer.train(progress=progress, log=clock, checkpoint_every=cfg.checkpoint_every)
    if has_lora(model) and merge:
        merge_lora(model)
    final = save_final(model, processor, out / "final")
    after = evaluate_prompts(model, processor, eval_samples, router, max_new_tokens=cfg.max_new_tokens) \
        if eval_samples else []
    morl = MorlResult(settings["profile"], f"{settings['mode']} GRPO on {prompts.name}", relative_to_runs(checkpoint),
                      cfg.steps, load_scores(before_file), after)
    history = read_metrics(out)  # every step of the run, a resumed one's too
    rewards = [r["reward"] for r in history]
    tenth = max(1, len(rewards) // 10)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    first = next((r.get("first_update/ratio_max_dev") for r in history if "first_update/ratio_max_dev" in r), None)
    result = PromptRLResult(morl, str(prompts), settings["rewards"], str(final), mean(rewards[:tenth]),
                            mean(rewards[-tenth:]), clock.median, first, settings)
    tmp = out / "grpo.json.tmp"
    tmp.write_text(json.dumps(result.as_dict(), indent=2))
    tmp.replace(out / "grpo.json")
    return result


__all__ = ["ANSWER_NEEDS", "PromptRLResult", "check_prompts", "evaluate_prompts", "load_reward_specs",
           "required_columns", "run_grpo_files"]
