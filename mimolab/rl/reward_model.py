"""Bradley-Terry reward models on the VLM: a scalar head reading the last token's hidden state.

MiMo-VL trains two (report, sec. 3): a text-only one and a multimodal one, on ranked responses.
Here the pairs come from the synthetic world, where which answer is better is known:

- correct vs wrong: the reference answer against the same answer with its number changed;
- grounded vs hallucinated: a caption against one that names an object the image does not hold;
- concise vs rambling: the reference against the reference padded with filler.

Loss: ``-log sigmoid(r(chosen) - r(rejected))``. Pairwise accuracy on held-out pairs is the share
where the chosen response scores higher. ``RewardModelReward`` makes a trained model a reward
function with TRL's signature (it needs the prompts, passed as the ``samples`` column).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from mimolab.data.packing import collate_packed
from mimolab.data.tokenize import templated_sample
from mimolab.data.world import generate
from mimolab.data.world.scene import COLORS

FILLER = (" Let me restate that to be sure.", " To say it once more in other words, the same holds.",
          " I have checked this again and it still holds.")
TEXT_TASKS = ("text", "text_reasoning")
MULTIMODAL_TASKS = ("caption", "counting", "visual_math", "chart")
SCORE_HEAD = "score_head.safetensors"


@dataclass
class Pair:
    sample: object  # the world Sample: its user turn is the prompt
    chosen: str
    rejected: str
    kind: str  # "correct_vs_wrong" | "grounded_vs_hallucinated" | "concise_vs_rambling"


def _change_number(text: str, rng: random.Random) -> str | None:
    numbers = list(re.finditer(r"-?\d+", text))
    if not numbers:
        return None
    last = numbers[-1]  # the final answer is the last number (\boxed{..}, a count, a value)
    return text[:last.start()] + str(int(last.group()) + rng.choice((-2, -1, 1, 2))) + text[last.end():]


def _hallucinate(caption: str, rng: random.Random) -> str | None:
    colors = [c for c in COLORS if re.search(rf"\b{c}\b", caption)]
    if not colors:
        return None
    old = rng.choice(colors)
    return re.sub(rf"\b{old}\b", rng.choice([c for c in COLORS if c not in colors] or [old]), caption, count=1)


def preference_pair(task: str, index: int, seed: int = 0, difficulty: float = 0.3) -> Pair | None:
    """One pair of ``task`` (None when the sample offers no way to build one)."""
    sample = generate(task, index, seed=seed, difficulty=difficulty)
    rng = random.Random(f"pair/{task}/{seed}/{index}")
    reply = sample.reply
    if task == "caption":
        rejected, kind = _hallucinate(reply, rng), "grounded_vs_hallucinated"
    elif rng.random() < 0.7 and task != "text":
        rejected, kind = _change_number(reply, rng), "correct_vs_wrong"
    else:
        rejected, kind = reply + "".join(rng.sample(FILLER, 2)), "concise_vs_rambling"
    if rejected is None or rejected == reply:
        return None
    return Pair(sample, reply, rejected, kind)


def preference_pairs(tasks: tuple[str, ...], n: int, start: int = 0, seed: int = 0, difficulty: float = 0.3) -> list[Pair]:
    pairs, index = [], start
    while len(pairs) < n:
        pair = preference_pair(tasks[index % len(tasks)], index, seed, difficulty)
        if pair is not None:
            pairs.append(pair)
        index += 1
    return pairs


class RewardModel(nn.Module):
    """The VLM's decoder with ``score`` = Linear(hidden, 1) on the last token of each response."""

    def __init__(self, vlm: nn.Module) -> None:
        super().__init__()
        self.vlm = vlm
        self.score = nn.Linear(vlm.config.text.hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward_packed(self, samples: list, row_tokens: int) -> torch.Tensor:
        """One scalar per tokenised sample, samples packed into rows (attention never crosses them)."""
        scores, row, used = [], [], 0
        for s in samples + [None]:
            if s is None or (row and used + len(s) > row_tokens):
                packed = collate_packed(row, row_tokens, self.vlm.config.padding_id)
                hidden = self.vlm(**{k: v for k, v in packed.model_inputs().items() if k != "labels"}).hidden_states[0]
                last = packed.cu_seqlens[1:len(row) + 1].long() - 1
                scores.append(self.score(hidden[last].float())[:, 0])
                row, used = [], 0
            if s is not None:
                row.append(s)
                used += len(s)
        return torch.cat(scores)


def tokenize_response(processor, config, sample, response: str):
    """The sample's user turn plus ``response`` as the assistant turn, with images and positions."""
    messages = [m for m in sample.messages if m["role"] == "user"] + [
        {"role": "assistant", "content": [{"type": "text", "text": response}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=False)
    return templated_sample(processor, config, text, sample.images, sample.videos, sample.task)


def pair_scores(model: RewardModel, processor, pairs: list[Pair], row_tokens: int = 2048) -> torch.Tensor:
    """(n, 2): the scores of chosen and rejected."""
    config = model.vlm.config
    flat = [tokenize_response(processor, config, p.sample, text) for p in pairs for text in (p.chosen, p.rejected)]
    return model.forward_packed(flat, row_tokens).view(-1, 2)


def train_reward_model(model: RewardModel, processor, pairs: list[Pair], *, steps: int, batch: int = 16,
                       lr: float = 1e-4, seed: int = 0, log=None) -> list[float]:
    """Bradley-Terry loss on batches of pairs; returns the per-step losses."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    losses = []
    model.train()
    for step in range(steps):
        scores = pair_scores(model, processor, rng.sample(pairs, min(batch, len(pairs))))
        loss = -nn.functional.logsigmoid(scores[:, 0] - scores[:, 1]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if log is not None:
            log({"step": step + 1, "loss": losses[-1]})
    return losses


@torch.no_grad()
def pairwise_accuracy(model: RewardModel, processor, pairs: list[Pair]) -> dict[str, float]:
    """Share of pairs whose chosen response scores higher, overall and per kind."""
    model.eval()
    wins = (lambda s: (s[:, 0] > s[:, 1]).float())(pair_scores(model, processor, pairs))
    out = {"all": float(wins.mean())}
    for kind in sorted({p.kind for p in pairs}):
        rows = [i for i, p in enumerate(pairs) if p.kind == kind]
        out[kind] = float(wins[rows].mean())
    return out


class RewardModelReward:
    """A trained reward model as a TRL-style reward: sigmoid(score) in [0, 1], prompts from ``samples``."""

    def __init__(self, model: RewardModel, processor, tasks: tuple[str, ...] | None = None, name: str = "reward_model"):
        self.model, self.processor, self.tasks, self.__name__ = model, processor, tasks, name

    @torch.no_grad()
    def __call__(self, completions: list[str], samples: list | None = None, task: list[str] | None = None,
                 **columns) -> list[float | None]:
        if samples is None:
            raise ValueError("a reward model needs the prompts: pass the samples column")
        wanted = [i for i, s in enumerate(samples) if self.tasks is None or s.task in self.tasks]
        out: list[float | None] = [None] * len(completions)
        if wanted:
            self.model.eval()
            flat = [tokenize_response(self.processor, self.model.vlm.config, samples[i], completions[i]) for i in wanted]
            for i, value in zip(wanted, torch.sigmoid(self.model.forward_packed(flat, 4096)).tolist()):
                out[i] = value
        return out


def save_reward_model(model: RewardModel, processor, path: str | Path) -> Path:
    """The VLM (Qwen2.5-VL directory), its processor and the score head, written atomically."""
    from safetensors.torch import save_file

    from mimolab.model.checkpoint import atomic_directory

    path = Path(path)
    with atomic_directory(path) as tmp:
        model.vlm.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        save_file({k: v.detach().contiguous() for k, v in model.score.state_dict().items()}, str(tmp / SCORE_HEAD))
    return path


def load_reward_model_reward(path: str | Path, tasks: tuple[str, ...] | None = None,
                             name: str | None = None) -> RewardModelReward:
    """A reward from a directory ``save_reward_model`` wrote (named ``rm_<directory name>`` by default)."""
    from safetensors.torch import load_file

    from mimolab.model.vlm import MiMoVL
    from mimolab.processing import MiMoVLProcessor

    path = Path(path)
    if not (path / SCORE_HEAD).exists():
        raise FileNotFoundError(f"{path} holds no {SCORE_HEAD}: not a reward model saved by save_reward_model")
    model = RewardModel(MiMoVL.from_pretrained(path))
    model.score.load_state_dict(load_file(str(path / SCORE_HEAD)))
    return RewardModelReward(model.eval(), MiMoVLProcessor.from_pretrained(path), tasks, name or f"rm_{path.name}")

