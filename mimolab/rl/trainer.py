"""The GRPO loop: prompts from the synthetic world (or from any prompt source: ``prompts=``, such as
``mimolab.data.files.PromptFile`` over a file's records), group rollouts with the KV-cache generator,
rewards, advantages, updates, logs. The math lives in ``grpo.py``; this file moves data.

The reference policy is the starting weights: with LoRA, the same model with its adapters
switched off (no second copy); without, a frozen copy made at the start. LoRA comes either from
the caller (a model with adapters already) or from the config (``lora_rank > 0``).
"""

from __future__ import annotations

import copy
import random
import time
from collections import defaultdict
from pathlib import Path

import torch

from mimolab.data.packing import collate_left_padded
from mimolab.data.tokenize import templated_sample
from mimolab.data.world import generate as world_sample
from mimolab.model.generation import generate
from mimolab.rl.grpo import GRPOConfig, Rollout, group_advantages, policy_loss
from mimolab.rl.logprobs import completion_logprobs
from mimolab.rl.rewards import default_rewards
from mimolab.rl.service import RewardRouter, RewardServiceError
from mimolab.train.checkpoints import LoopRNG, load_checkpoint, save_checkpoint, stop_if_not_finite
from mimolab.train.lora import add_lora, has_lora
from mimolab.train.tracking import Tracker

STATE_FILE = "grpo_state.pt"
RL_INDEX_BASE = 2 * 10**6  # RL prompts come from their own range of world indices (not pre-training's, not held-out)


def prompt_turns(sample) -> list[dict]:
    """TRL's conversational ``prompts`` column for a sample: the turns before the reply, as text."""
    turns = sample.messages[:-1] if sample.messages[-1]["role"] == "assistant" else sample.messages
    text = lambda c: c if isinstance(c, str) else "".join(i["text"] for i in c if i.get("type") == "text")  # noqa: E731
    return [{"role": m["role"], "content": text(m["content"])} for m in turns]


def reward_columns(samples: list) -> dict:
    """The per-sample columns every reward gets (``samples``: the prompts, for reward models), and, as
    TRL passes a data set's columns, ``prompts`` and every field a prompt record carries
    (``meta["columns"]``; None for a sample without it). ``reference``: the reply turn, None for a
    prompt that has none."""
    columns = {"task": [s.task for s in samples], "answer": [s.answer for s in samples],
               "reference": [s.reply if s.messages[-1]["role"] == "assistant" else None for s in samples],
               "prompts": [prompt_turns(s) for s in samples], "samples": samples}
    extra = dict.fromkeys(k for s in samples for k in s.meta.get("columns", {}) if k not in columns)
    return {**columns, **{k: [s.meta.get("columns", {}).get(k) for s in samples] for k in extra}}


def rollout_prompt(processor, config, sample):
    """A world sample's user turn, templated and tokenised with its images: what the policy answers."""
    chat = processor.apply_chat_template([m for m in sample.messages if m["role"] == "user"])
    return templated_sample(processor, config, chat, sample.images, sample.videos, sample.task)


class GRPOTrainer:
    def __init__(self, model, processor, cfg: GRPOConfig, run_dir: str | Path, *, rewards: list | None = None,
                 tracker: Tracker | None = None, prompts=None) -> None:
        if cfg.lora_rank and not has_lora(model):
            with LoopRNG(cfg.seed).active():  # lora_A's random start is the run's, not whatever ran before
                add_lora(model, cfg.lora_parts, r=cfg.lora_rank, alpha=cfg.lora_alpha)
        self.model, self.processor, self.cfg = model, processor, cfg
        self.run_dir = Path(run_dir)
        # a router (in-process or RemoteRewards) as given; a list of TRL-style rewards gets one in-process
        rewards = default_rewards() if rewards is None else rewards
        self.rewards = rewards if hasattr(rewards, "score") else RewardRouter(rewards)
        self.tracker = tracker
        self.lora = has_lora(model)
        # the frozen start policy (LoRA: the model with its adapters off), kept only where a step reads it
        needs_reference = cfg.kl_coef > 0 or cfg.kl_every > 0
        self.reference = None if self.lora or not needs_reference else copy.deepcopy(model).eval().requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.rng = random.Random(cfg.seed)
        self.step_count = 0
        self.next_index = defaultdict(int)
        # None: world prompts by the config's task weights; else an object with draw(n) -> samples and
        # state_dict() / load_state_dict() (its position goes into checkpoints)
        self.prompts = prompts
        # media placeholders are never sampled: a completion is text, and a sampled <|image_pad|> has no image
        c = model.config
        self.suppress = (c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id)

    # ------------------------------------------------------------------ data
    def draw_prompts(self) -> list:
        if self.prompts is not None:
            return self.prompts.draw(self.cfg.prompts_per_step)
        tasks, weights = zip(*self.cfg.tasks)
        picked = self.rng.choices(tasks, weights=weights, k=self.cfg.prompts_per_step)
        samples = []
        for task in picked:
            samples.append(world_sample(task, RL_INDEX_BASE + self.next_index[task], seed=self.cfg.seed,
                                        difficulty=self.cfg.difficulty))
            self.next_index[task] += 1
        return samples

    @torch.no_grad()
    def rollout(self, samples: list) -> list[list[Rollout]]:
        """``group_size`` sampled completions of each prompt: each prompt (its images and its tokens) is
        prefilled once and its KV cache copied into the group's rows (``num_return_sequences``)."""
        g = self.cfg.group_size
        prompts = [rollout_prompt(self.processor, self.model.config, s) for s in samples]
        batch = collate_left_padded(prompts, self.model.config.padding_id)
        self.model.eval()
        out = generate(self.model, batch.pop("input_ids"), batch.pop("attention_mask"), tokenizer=self.processor.tokenizer,
                       do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                       max_new_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed * 100_003 + self.step_count,
                       suppress_token_ids=self.suppress, num_return_sequences=g, prefill_dtype=self.cfg.rollout_dtype,
                       decode_dtype=self.cfg.rollout_dtype, **batch)
        groups = []
        for p, s in enumerate(samples):
            groups.append([Rollout(s, prompts[p], out.sequences[p * g + j], out.logprobs[p * g + j], out.texts[p * g + j],
                                   out.finish_reasons[p * g + j]) for j in range(g)])
        return groups

    # ------------------------------------------------------------------ one step
    def reference_logprobs(self, samples) -> list[torch.Tensor]:
        with torch.no_grad():
            if self.lora:
                from peft.tuners.lora import LoraLayer

                layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
                for layer in layers:
                    layer.enable_adapters(False)
                try:
                    return completion_logprobs(self.model, samples, self.cfg.temperature, self.cfg.row_tokens,
                                               suppress=self.suppress, bf16=self.cfg.bf16)[0]
                finally:
                    for layer in layers:
                        layer.enable_adapters(True)
            return completion_logprobs(self.reference, samples, self.cfg.temperature, self.cfg.row_tokens,
                                       suppress=self.suppress, bf16=self.cfg.bf16)[0]

    def _stream_state(self) -> tuple:
        """Where the prompt stream stands: the world's RNG and indices, or the prompt source's state."""
        return (self.rng.getstate(), dict(self.next_index), self.prompts.state_dict() if self.prompts else None)

    def _set_stream_state(self, state: tuple) -> None:
        self.rng.setstate(state[0])
        self.next_index = defaultdict(int, state[1])
        if self.prompts is not None and state[2] is not None:
            self.prompts.load_state_dict(state[2])

    def score(self, groups: list[list[Rollout]], stream_state: tuple) -> tuple[torch.Tensor, dict[str, float]]:
        """(prompts, group_size) rewards and each component's mean. If the reward service is gone after its
        retries: rewind the prompt stream to before this step, save a checkpoint, stop with a clear error."""
        flat = [r for grp in groups for r in grp]
        try:
            scored = self.rewards.score([r.text for r in flat], **reward_columns([r.sample for r in flat]))
        except RewardServiceError as err:
            self._set_stream_state(stream_state)
            path = self.save_checkpoint()
            raise RewardServiceError(f"{err}\nGRPO stopped before step {self.step_count + 1}; checkpoint saved at "
                                     f"{path}. Restart the reward service, then GRPOTrainer.resume() continues "
                                     "exactly where this run stopped.") from err
        return torch.tensor(scored.total).view(len(groups), -1), scored.means()

    def step(self) -> dict:
        cfg = self.cfg
        stream_state = self._stream_state()
        start = time.perf_counter()
        samples = self.draw_prompts()
        groups = self.rollout(samples)
        rolled = time.perf_counter()
        rewards, components = self.score(groups, stream_state)
        scored = time.perf_counter()
        keep = rewards.std(dim=1, unbiased=False) >= cfg.min_group_std
        advantages = group_advantages(rewards)
        kept = [(r, float(a)) for grp, adv, k in zip(groups, advantages, keep) if k for r, a in zip(grp, adv)]
        record = {"step": self.step_count + 1, "reward": float(rewards.mean()), "groups_kept": int(keep.sum()),
                  "response_length": sum(len(r.tokens) for grp in groups for r in grp) / rewards.numel()}
        for task in {s.task for s in samples}:
            rows = [i for i, s in enumerate(samples) if s.task == task]
            record[f"reward/{task}"] = float(rewards[rows].mean())
            record[f"response_length/{task}"] = sum(len(r.tokens) for i in rows for r in groups[i]) / (len(rows) * cfg.group_size)
        record.update({f"reward_component/{name}": value for name, value in components.items()})
        if kept:
            record.update(self._update([r for r, _ in kept], torch.tensor([a for _, a in kept])))
        # where the step's wall-clock time went (the report gives the means)
        record.update({"seconds/rollout": rolled - start, "seconds/rewards": scored - rolled,
                       "seconds/update": time.perf_counter() - scored})
        self.step_count += 1
        if self.tracker is not None:
            self.tracker.log(record, step=record["step"])
            self.tracker.log_table("completions", ["step", "task", "completion", "reward"],
                                   [[record["step"], grp[0].sample.task, grp[0].text, float(rewards[i, 0])]
                                    for i, grp in enumerate(groups)])
        return record

    def _update(self, rollouts: list[Rollout], advantages: torch.Tensor) -> dict:
        cfg = self.cfg
        config = self.model.config
        samples = [r.training_sample(config) for r in rollouts]
        old = [torch.tensor(r.logprobs) for r in rollouts]  # the generator's, as on-policy RL uses them
        measure_kl = cfg.kl_every > 0 and (self.step_count + 1) % cfg.kl_every == 0
        ref = self.reference_logprobs(samples) if cfg.kl_coef > 0 or measure_kl else None
        stats = {}
        self.model.train()
        for update in range(cfg.updates_per_batch):
            logprobs, entropy = completion_logprobs(self.model, samples, cfg.temperature, cfg.row_tokens,
                                                    with_entropy=update == 0, suppress=self.suppress, bf16=cfg.bf16)
            if update == 0 and (cfg.rollout_dtype or cfg.bf16):  # sampler and update in other dtypes: old = update's
                sampler = old
                old = [lp.detach() for lp in logprobs]
                stats["sampler_logprob_max_dev"] = float(max((a - b.to(a)).abs().max() for a, b in zip(old, sampler)))
            loss, stats_now = policy_loss(logprobs, old, advantages, cfg, ref_logprobs=ref)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                                       cfg.grad_clip)
            stop_if_not_finite("GRPO", self.step_count + 1, float(loss.detach()), float(grad_norm), self.run_dir)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if update == 0:  # the first update's ratios are the on-policy check: exactly 1 up to float error
                stats.update({f"first_update/{k}": v for k, v in stats_now.items()},
                             entropy=float(torch.cat(entropy).mean()) if entropy else None)
            stats.update(loss=float(loss.detach()), grad_norm=float(grad_norm), **stats_now)
        return stats

    def train(self, steps: int | None = None, progress: bool = True, log=None, checkpoint_every: int = 0) -> list[dict]:
        """Run to ``steps`` (default: the config's); ``log(record)`` after each step (a live plot);
        a checkpoint every ``checkpoint_every`` steps (0: none) and at the end."""
        from tqdm.auto import tqdm

        steps = self.cfg.steps if steps is None else steps
        history = []
        for _ in tqdm(range(self.step_count, steps), desc="grpo", disable=not progress):
            history.append(self.step())
            if log is not None:
                log(history[-1])
            if checkpoint_every and (self.step_count % checkpoint_every == 0 or self.step_count == steps):
                self.save_checkpoint()
        return history

    def close(self) -> None:
        """Stop the rewards' worker processes (or the service client)."""
        if hasattr(self.rewards, "close"):
            self.rewards.close()

    def __enter__(self) -> "GRPOTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Model (+ adapters), optimizer, step, prompt stream and RNG, written atomically."""
        return save_checkpoint(self.run_dir, self.step_count, self.model, {
            "step": self.step_count, "optimizer": self.optimizer.state_dict(), "rng": self.rng.getstate(),
            "next_index": dict(self.next_index), "prompts": self.prompts.state_dict() if self.prompts else None},
            STATE_FILE)

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        """Continue from the latest (or a given) checkpoint of this run; False when there is none."""
        state = load_checkpoint(self.run_dir, self.model, STATE_FILE, checkpoint)
        if state is None:
            return False
        self.optimizer.load_state_dict(state["optimizer"])
        self._set_stream_state((state["rng"], state["next_index"], state.get("prompts")))
        self.step_count = state["step"]
        return True
