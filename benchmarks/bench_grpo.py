"""One GRPO step, mimolab's GRPOTrainer against TRL's GRPOTrainer (trl 1.16, the `bench` extra), on the same
checkpoint, prompts, images, group size, completion length and loss.

    OMP_NUM_THREADS=1 python benchmarks/bench_grpo.py [--preset cpu --prompts 8 --group 4 --new-tokens 64 --steps 3]

The checkpoint: a fresh model of the preset, written by ``MiMoVL.save_pretrained`` (Qwen2.5-VL format) and
loaded by transformers' ``Qwen2_5_VLForConditionalGeneration`` for TRL and by ``MiMoVL.from_pretrained``
for mimolab. Prompts: synthetic-world samples (the cpu RL profile's tasks and difficulty), one image each,
rendered by the world tokenizer's chat template on both sides. TRL gets them as a data set of
conversational prompts with an ``image`` column; its processor is transformers' ``Qwen2_5_VLProcessor``
with the world tokenizer and the same PIL image processor, and no video processor (which needs
torchvision, not installable beside the CPU torch); the prompt token ids are checked equal to mimolab's.
Both sample ``--group`` completions per prompt at the same temperature (top-p 1) up to ``--new-tokens``,
score them with the same reward function, and take one optimizer step on the token-level clipped
surrogate (TRL ``loss_type="dapo"``, mimolab ``loss_agg="token_mean"``), beta / kl_coef 0, one update
per batch, float32 (``--trl-bf16``: TRL's ``bf16=True``). Neither computes the reference policy's log-probs:
TRL skips them at beta 0, mimolab with ``kl_every=0`` (``--kl-every N``: mimolab's reference forward every N steps,
timed on its own as ``reference``, to show what logging the KL to the start costs). ``mimolab_bf16`` is the same
step with ``rollout_dtype="bfloat16"`` and ``bf16=True`` (the update under bfloat16 autocast; the old
log-probs are then the update's own, as TRL's at one update per batch).

The libraries alternate step by step (TRL, mimolab, mimolab_bf16, TRL, ...): TRL's training loop calls back
at each step's end, where the mimolab steps run. The first step of each is a warm-up; then best and median
seconds per step, wall-clock and CPU, with the rollout (TRL: ``_generate``, tokenising included; mimolab:
``GRPOTrainer.rollout``) and the rest (rewards, forward, backward, optimizer) apart; JSON at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import machine  # noqa: E402

from mimolab import MiMoVL  # noqa: E402
from mimolab.data.pipeline import world_processor, world_tokenizer  # noqa: E402
from mimolab.data.world import generate as world_sample  # noqa: E402
from mimolab.rl.grpo import GRPOConfig  # noqa: E402
from mimolab.rl.trainer import RL_INDEX_BASE, GRPOTrainer, rollout_prompt  # noqa: E402


def reward(completions, **kwargs) -> list[float]:
    """A fixed score per completion text (both libraries call it the same way): cheap, and it varies."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(map(ord, t)) % 7 / 6 for t in texts]


class Clock:
    """Wall-clock and CPU seconds spent inside wrapped methods, per step."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def wrap(self, obj, name: str) -> None:
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - wall
                self.cpu += time.process_time() - cpu
        setattr(obj, name, timed)

    def take(self) -> tuple[float, float]:
        out, self.wall, self.cpu = (self.wall, self.cpu), 0.0, 0.0
        return out


class FixedPrompts:
    """mimolab's prompt source over a list of samples, in order (what TRL's unshuffled sampler reads)."""

    def __init__(self, samples: list) -> None:
        self.samples, self.position = samples, 0

    def draw(self, n: int) -> list:
        out = self.samples[self.position:self.position + n]
        self.position += n
        return out

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def trl_processor(processor):
    """transformers' Qwen2_5_VLProcessor over the world tokenizer and image processor, without a video
    processor (its default one needs torchvision)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2_5_VLProcessor(processor.image_processor, processor.tokenizer,
                                        chat_template=processor.tokenizer.chat_template)


def trl_row(sample) -> dict:
    """TRL's data set row: the user's text as a conversational prompt, its image in the ``image`` column
    (TRL puts it before the text, where the world's messages have it)."""
    user = next(m for m in sample.messages if m["role"] == "user")
    if [c["type"] for c in user["content"]] != ["image", "text"] or len(sample.images) != 1:
        raise ValueError(f"bench_grpo expects one image then the text; a {sample.task} sample has {user['content']}")
    return {"prompt": [{"role": "user", "content": user["content"][1]["text"]}], "image": sample.images[0]}


def same_prompt_ids(tp, processor, config, samples: list) -> int:
    """How many prompts TRL's processor tokenises to mimolab's rollout ids (TRL's own call)."""
    from trl.data_utils import prepare_multimodal_messages

    rows = [trl_row(s) for s in samples]
    convs = [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in rows]
    ids = tp.apply_chat_template(conversation=convs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    return sum(list(a) == rollout_prompt(processor, config, s).input_ids for a, s in zip(ids, samples))


def trainers(args, work: Path, processor, samples: list):
    """TRL's trainer on transformers' model, and mimolab's (float32; bf16 rollouts and update) on MiMoVL, all
    from one checkpoint written by MiMoVL.save_pretrained."""
    from datasets import Dataset
    from transformers import Qwen2_5_VLForConditionalGeneration
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    MiMoVL.from_preset(args.preset).save_pretrained(work / "ckpt")
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(work / "ckpt", dtype=torch.float32)
    common = dict(prompts_per_step=args.prompts, group_size=args.group, max_new_tokens=args.new_tokens,
                  temperature=args.temperature, top_p=1.0, lr=1e-5, loss_agg="token_mean", kl_coef=0.0,
                  kl_every=args.kl_every, updates_per_batch=1, clip_eps=0.2, min_group_std=0.0, grad_clip=1.0)
    ours = {name: GRPOTrainer(MiMoVL.from_pretrained(work / "ckpt"), processor, GRPOConfig(**common, **precision),
                              work / name, rewards=[reward], prompts=FixedPrompts(list(samples)))
            for name, precision in (("mimolab", {}), ("mimolab_bf16", {"rollout_dtype": "bfloat16", "bf16": True}))}
    n_steps = args.steps + 1
    trl_args = TRLConfig(output_dir=str(work / "trl"), use_cpu=True, bf16=args.trl_bf16, gradient_accumulation_steps=1,
                         per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
                         max_completion_length=args.new_tokens, temperature=args.temperature, top_p=1.0,
                         learning_rate=1e-5, loss_type="dapo", beta=0.0, epsilon=0.2, num_iterations=1,
                         max_grad_norm=1.0, max_steps=n_steps, shuffle_dataset=False, disable_dropout=True,
                         report_to="none", save_strategy="no", logging_steps=n_steps, dataloader_num_workers=0, seed=0)
    trl = TRLTrainer(model=hf, reward_funcs=[reward], args=trl_args, processing_class=trl_processor(processor),
                     train_dataset=Dataset.from_list([trl_row(s) for s in samples]))
    return trl, ours


def alternate(trl, ours: dict) -> tuple[dict, dict]:
    """Train TRL; at each of its steps' end, one step of each mimolab trainer. Per library and step: (wall, CPU)
    seconds of the step, of its rollout and (mimolab) of its reference forward; mimolab's step records."""
    from transformers import TrainerCallback

    clocks = {"transformers+trl": [Clock()], **{name: [Clock(), Clock()] for name in ours}}
    clocks["transformers+trl"][0].wrap(trl, "_generate")
    for name, t in ours.items():
        clocks[name][0].wrap(t, "rollout")
        clocks[name][1].wrap(t, "reference_logprobs")
    times = {name: [] for name in clocks}
    records = {name: [] for name in ours}

    class Alternate(TrainerCallback):
        def __init__(self) -> None:
            self.mark = (time.perf_counter(), time.process_time())

        def on_step_end(self, *_, **__):
            wall, cpu = time.perf_counter() - self.mark[0], time.process_time() - self.mark[1]
            times["transformers+trl"].append((wall, cpu, *clocks["transformers+trl"][0].take()))
            for name, t in ours.items():
                w, c = time.perf_counter(), time.process_time()
                records[name].append(t.step())
                times[name].append((time.perf_counter() - w, time.process_time() - c,
                                    *(x for clock in clocks[name] for x in clock.take())))
            self.mark = (time.perf_counter(), time.process_time())

    trl.add_callback(Alternate())
    trl.train()
    return times, records


def summary(times: dict) -> tuple[dict, dict]:
    """Best and median seconds per part after the warm-up step, and TRL's over each mimolab trainer's."""
    seconds = {}
    for name, rows in times.items():
        cols = dict(zip(("step_wall", "step_cpu", "rollout_wall", "rollout_cpu", "reference_wall", "reference_cpu"),
                        zip(*rows[1:])))  # the first step warms up
        entry = {f"{k}_{stat}": f(v) for k, v in cols.items() for stat, f in (("best", min), ("median", statistics.median))}
        for clock in ("wall", "cpu"):
            entry[f"rest_{clock}_median"] = statistics.median(s - r for s, r in zip(cols[f"step_{clock}"],
                                                                                    cols[f"rollout_{clock}"]))
        seconds[name] = entry
    keys = ("step_wall_median", "step_cpu_median", "step_wall_best", "step_cpu_best", "rollout_wall_median",
            "rollout_cpu_median", "rest_wall_median", "rest_cpu_median")
    trl = seconds["transformers+trl"]
    return seconds, {name: {k: trl[k] / s[k] for k in keys} for name, s in seconds.items() if name != "transformers+trl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each (after one warm-up step)")
    parser.add_argument("--tasks", default="grounding,counting,chart")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--trl-bf16", action="store_true", help="TRL with bf16=True (autocast) instead of float32")
    parser.add_argument("--kl-every", type=int, default=0,
                        help="mimolab's reference forward (the KL to the start) every N steps; 0: never, as TRL at beta 0")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    warnings.filterwarnings("ignore")
    from trl import __version__ as trl_version

    torch.manual_seed(0)
    processor = world_processor(world_tokenizer())
    tasks = args.tasks.split(",")
    samples = [world_sample(tasks[i % len(tasks)], RL_INDEX_BASE + i, difficulty=0.1)
               for i in range((args.steps + 1) * args.prompts)]
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="bench_grpo_") as work:
        trl, ours = trainers(args, Path(work), processor, samples)
        try:
            times, records = alternate(trl, ours)
        finally:
            for t in ours.values():
                t.close()
        same = same_prompt_ids(trl.processing_class, processor, ours["mimolab"].model.config, samples)
    seconds, ratios = summary(times)
    results = {"preset": args.preset, "prompts": args.prompts, "group": args.group, "new_tokens": args.new_tokens,
               "trl_bf16": args.trl_bf16, "kl_every": args.kl_every, "steps_timed": args.steps, "tasks": tasks, "temperature": args.temperature,
               "prompt_ids_equal": f"{same}/{len(samples)}",
               "machine": {**machine(), "trl": trl_version, "load_average_1_5_15": load_before,
                           "load_average_after": list(os.getloadavg())},
               "completion_tokens_mimolab": [r["response_length"] * args.prompts * args.group for r in records["mimolab"]],
               "sampler_logprob_max_dev_bf16": [r.get("sampler_logprob_max_dev") for r in records["mimolab_bf16"]],
               "first_update_ratio_max_dev": {k: [r.get("first_update/ratio_max_dev") for r in v]
                                              for k, v in records.items()},
               "seconds": seconds, "ratios": ratios}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
