"""Supervised fine-tuning of any Qwen2.5-VL-format checkpoint on your files (``mimolab sft``).

    result = run_sft("path/to/checkpoint", {"chat.jsonl": 1.0, "more.parquet": 0.3}, "runs/sft/mine",
                     steps=200, lr=1e-5, eval_split=0.1)

The checkpoint directory brings its own tokenizer and chat template (``MiMoVLProcessor.from_pretrained``);
the files are JSONL in mimolab's chat schema or local ``datasets`` files (``mimolab.data.files``), mixed
by token share. One training stage runs through the shared loop (``mimolab.train.Trainer``): loss on
the assistant turns only, samples packed into rows of ``row_tokens``, W&B (offline unless a key or
``WANDB_MODE`` says otherwise), checkpoints that a re-run of the same command resumes exactly, LoRA
adapters in peft's format when ``lora_rank`` > 0 (folded into the weights with ``merge=True``).

With ``eval_split`` each file keeps that share of its records out of training (``is_held_out``), and
their assistant-token loss is measured before and after on the same records (a paired change).

    out/
      sft.yaml                 the run's settings (a re-run with other settings is refused)
      metrics.jsonl, wandb/    per step: loss, loss per task, tokens/s, learning rates
      checkpoints/step-N/      model + optimizer + data position: a killed run resumes
      eval_before.json         held-out per-sample losses before training (kept for the resume)
      final/                   model + processor (LoRA: base weights and final/adapter, unless merged)
      sft.json                 ``SFTResult``: the held-out loss changes, train loss, time per step
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml

from mimolab.data.files import data_mixture, file_source, held_out_records, source_names, split_source
from mimolab.data.mixture import BadRecord, SkipCounter
from mimolab.data.packing import pack
from mimolab.data.tokenize import record_tokenizer
from mimolab.demo import load_checkpoint
from mimolab.eval.results import mean_stderr
from mimolab.model.vlm import PARTS
from mimolab.settings import check_value, runs_root
from mimolab.train.checkpoints import save_final
from mimolab.train.loop import Trainer, per_sample_losses
from mimolab.train.lora import has_lora, merge_lora
from mimolab.train.stage import Stage
from mimolab.train.tracking import StepTimes, Tracker, read_metrics


def parse_data(specs: list[str] | dict[str, float]) -> dict[str, float]:
    """``["chat.jsonl", "more.parquet:0.3"]`` -> ``{"chat.jsonl": 1.0, "more.parquet": 0.3}`` (share 1 unless given)."""
    if isinstance(specs, dict):
        return {str(k): float(v) for k, v in specs.items()}
    data = {}
    for spec in map(str, specs):
        path, sep, share = spec.rpartition(":")
        try:
            data[path if sep and path else spec] = float(share) if sep and path else 1.0
        except ValueError:  # a ':' that does not start a share
            data[spec] = 1.0
    return data


def trainable_parts(freeze: tuple[str, ...] | list[str] | str) -> list[str]:
    freeze = [p for p in (freeze.split(",") if isinstance(freeze, str) else freeze) if p]
    unknown = sorted(set(freeze) - set(PARTS))
    if unknown:
        raise ValueError(f"--freeze names unknown parts {unknown}; parts are {list(PARTS)}")
    parts = [p for p in PARTS if p not in freeze]
    if not parts:
        raise ValueError(f"--freeze {','.join(freeze)} leaves nothing to train")
    return parts


@dataclass
class SFTResult:
    """What ``sft.json`` holds."""

    checkpoint: str
    final: str
    steps: int
    heldout: list[dict] = field(default_factory=list)  # per file: n, before, after, change, stderr (nats/token)
    train_loss_first: float | None = None  # mean training loss of the first tenth of the steps
    train_loss_last: float | None = None  # of the last tenth
    seconds_per_step: float | None = None  # median wall time of the steps this process ran
    # records skipped, per reason: by the epoch count's pass over the files and by the training stream (which
    # meets a bad record again on every pass over a file it cycles through)
    skipped: dict[str, int] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> SFTResult:
        return cls(**json.loads(Path(path).read_text()))


def _settings(checkpoint, data, **given) -> dict:
    return {"checkpoint": str(Path(checkpoint).resolve()), "data": {str(Path(p).resolve()): s for p, s in data.items()},
            **given}


def check_settings(out: Path, settings: dict, name: str = "sft.yaml") -> None:
    """The first run writes its settings; a later run in the same directory must have the same ones,
    or resuming would mix two runs' checkpoints."""
    path = out / name
    if path.exists():
        before = yaml.safe_load(path.read_text())
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"{out} holds a run with other settings ({', '.join(changed)} differ); "
                             "resume it with the same ones, or choose another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(settings, sort_keys=False))


def count_tokens(data: dict[str, float], processor, config, max_length: int, eval_split: float,
                 skips: SkipCounter) -> int:
    """Tokens of one pass over the files' training records (bad records counted in ``skips``)."""
    tokenize, total = record_tokenizer(processor, config, max_length), 0
    for path, name in source_names(list(data)).items():
        for record in split_source(file_source(path), eval_split, held_out=False)(0):
            try:
                if isinstance(record, BadRecord):
                    raise record
                total += len(tokenize(record, name))
            except BadRecord as err:
                skips.skip(name, err)
    return total


def heldout_samples(data: dict[str, float], processor, config, max_length: int, eval_split: float,
                    limit: int) -> dict[str, list]:
    """Each file's held-out records, tokenised (bad ones left out)."""
    tokenize, out = record_tokenizer(processor, config, max_length), {}
    for path, name in source_names(list(data)).items():
        samples = []
        for record in held_out_records(path, eval_split, limit):
            try:
                if isinstance(record, BadRecord):
                    raise record
                samples.append(tokenize(record, name))
            except BadRecord:
                continue
        out[name] = samples
    return {name: samples for name, samples in out.items() if samples}


@torch.no_grad()
def heldout_losses(model, samples: list, row_tokens: int) -> list[float]:
    """Each sample's mean loss over its assistant tokens, in a deterministic packed order (the same
    samples give the same order, so two calls pair up)."""
    model.eval()
    losses = []
    for row in pack(samples, row_tokens, model.config.padding_id):
        inputs = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in row.model_inputs().items()
                  if k != "labels"}
        logits = model(**inputs).logits
        losses += [v for v in per_sample_losses(logits, row.labels, row.cu_seqlens) if v is not None]
    return losses


def loss_change(name: str, before: list[float], after: list[float]) -> dict:
    change, stderr = mean_stderr([a - b for b, a in zip(before, after)]) if len(before) > 1 else (
        after[0] - before[0], None)
    return {"file": name, "n": len(before), "before": sum(before) / len(before), "after": sum(after) / len(after),
            "change": change, "stderr": stderr}


def sft_stage(data, *, lr, steps, row_tokens, rows_per_step, lora_rank, lora_alpha, freeze, seed, checkpoint_every,
              warmup_steps, bf16) -> Stage:
    parts = trainable_parts(freeze)
    lora = {"parts": parts, "r": lora_rank, "alpha": lora_alpha or 2 * lora_rank} if lora_rank else None
    return Stage(name="sft", lr={p: lr for p in parts}, shares={}, data=data, steps=steps,
                 warmup_steps=min(warmup_steps, steps), row_tokens=row_tokens, rows_per_step=rows_per_step, seed=seed,
                 checkpoint_every=checkpoint_every, lora=lora, bf16=bf16, min_lr_ratio=0.1,
                 what="supervised fine-tuning on data files")


def run_sft(checkpoint: str | Path, data: list[str] | dict[str, float], out: str | Path | None = None, *,
            lr: float | None = None, steps: int | None = None, epochs: float | None = None, row_tokens: int = 2048,
            rows_per_step: int = 4, lora_rank: int = 0, lora_alpha: int | None = None,
            freeze: tuple[str, ...] | str = (), merge: bool = False, eval_split: float = 0.0,
            eval_max: int = 200, warmup_steps: int = 10, seed: int = 0, checkpoint_every: int = 50,
            bf16: bool = False, tracking: str | None = None, progress: bool = True, log=None) -> SFTResult:
    """Fine-tune ``checkpoint`` on ``data`` (module docstring); returns what ``sft.json`` holds (read back
    when the run finished before). ``steps`` or ``epochs`` (passes over the files' training tokens;
    default 1); ``lr`` defaults to 1e-5, 1e-4 with LoRA."""
    data = parse_data(data)
    if steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both")
    check_value("sft", "eval_split", eval_split, low=0, high=0.5)
    if epochs is not None:
        check_value("sft", "epochs", epochs, above=0)
    lr = lr if lr is not None else (1e-4 if lora_rank else 1e-5)
    out = Path(out) if out else runs_root() / "sft" / Path(checkpoint).resolve().name
    settings = _settings(checkpoint, data, lr=lr, steps=steps, epochs=epochs, row_tokens=row_tokens,
                         rows_per_step=rows_per_step, lora_rank=lora_rank, lora_alpha=lora_alpha,
                         freeze=list(freeze.split(",") if isinstance(freeze, str) else freeze), merge_lora=merge,
                         eval_split=eval_split, eval_max=eval_max, warmup_steps=warmup_steps, seed=seed, bf16=bf16)
    stage_args = dict(lr=lr, row_tokens=row_tokens, rows_per_step=rows_per_step, lora_rank=lora_rank,
                      lora_alpha=lora_alpha, freeze=freeze, seed=seed, checkpoint_every=checkpoint_every,
                      warmup_steps=warmup_steps, bf16=bf16)
    sft_stage(data, steps=1, **stage_args)  # every setting and file checked before anything loads
    check_settings(out, settings)
    if (out / "sft.json").exists():
        return SFTResult.load(out / "sft.json")
    model, processor = load_checkpoint(checkpoint)
    skips = SkipCounter()
    if steps is None:
        tokens = count_tokens(data, processor, model.config, row_tokens, eval_split, skips)
        if not tokens:
            raise ValueError(f"no usable record in {list(data)}: {skips.summary()}")
        steps = max(1, math.ceil((epochs or 1.0) * tokens / (row_tokens * rows_per_step)))
    stage = sft_stage(data, steps=steps, **stage_args)
    heldout = heldout_samples(data, processor, model.config, row_tokens, eval_split, eval_max) if eval_split else {}
    before = _before_losses(out, model, heldout, row_tokens)
    sampler = data_mixture({}, data, processor, model.config, max_length=row_tokens, seed=seed, eval_split=eval_split)
    times = _train(model, stage, sampler, out, settings, tracking, progress, log)
    if has_lora(model) and merge:
        merge_lora(model)
    final = save_final(model, processor, out / "final")
    after = {name: heldout_losses(model, samples, row_tokens) for name, samples in heldout.items()}
    result = _result(checkpoint, final, stage, before, after, read_metrics(out), times, settings,
                     dict(skips.counts + sampler.skips.counts))
    tmp = out / "sft.json.tmp"
    tmp.write_text(json.dumps(asdict(result), indent=2))
    tmp.replace(out / "sft.json")
    return result


def _before_losses(out: Path, model, heldout: dict[str, list], row_tokens: int) -> dict[str, list[float]]:
    path = out / "eval_before.json"  # kept: a resumed run compares with the starting weights' numbers
    if not path.exists():
        before = {name: heldout_losses(model, samples, row_tokens) for name, samples in heldout.items()}
        path.write_text(json.dumps(before))
    return json.loads(path.read_text())


def _train(model, stage: Stage, sampler, out: Path, settings: dict, tracking, progress, log) -> list[float]:
    """Train (resuming the run's last checkpoint); returns the wall seconds of each step this process ran."""
    clock = StepTimes(log)
    with Tracker(out, settings, mode=tracking, name=f"sft-{out.name}", group="sft") as tracker:
        trainer = Trainer(model, stage, sampler, out, tracker=tracker)
        trainer.resume()
        clock.start()
        trainer.train(progress=progress, log=clock)
        tracker.summary({"skipped_records": dict(sampler.skips.counts)})
    return clock.seconds


def _result(checkpoint, final: Path, stage: Stage, before: dict, after: dict, history: list, times: list,
            settings: dict, skipped: dict) -> SFTResult:
    """``history``: every step's record of the run (a resumed run's too, from metrics.jsonl)."""
    losses = [r["loss"] for r in history]
    tenth = max(1, len(losses) // 10)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return SFTResult(str(checkpoint), str(final), stage.steps,
                     [loss_change(name, before[name], after[name]) for name in after if before.get(name)],
                     mean(losses[:tenth]), mean(losses[-tenth:]), sorted(times)[len(times) // 2] if times else None,
                     skipped, settings)


__all__ = ["SFTResult", "heldout_losses", "parse_data", "run_sft"]
