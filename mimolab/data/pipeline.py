"""The synthetic world's data pipeline in one place: its tokenizer and processor settings, and a
streaming, resumable token-share mixture of tasks, tokenised and ready for packing.

    tokenizer = world_tokenizer()                      # byte-level BPE trained on the world's text
    processor = world_processor(tokenizer)             # small images stay at native resolution
    stream = world_mixture({"caption": 0.5, "ocr": 0.5}, processor, config, max_length=1024)
    rows = pack(stream, budget=2048, pad_id=config.padding_id)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mimolab.config import SYNTHETIC_VOCAB_SIZE, MiMoVLConfig
from mimolab.data.mixture import MixtureSampler
from mimolab.data.sources import world_source
from mimolab.data.tokenize import record_tokenizer
from mimolab.data.world import Difficulty
from mimolab.processing import MiMoVLProcessor, image_processor

# The world renders images of 112-224 px: keep them at native size (4 to 64 tokens per image);
# video frames (112 px) likewise.
WORLD_MIN_PIXELS, WORLD_MAX_PIXELS = 28 * 28 * 4, 224 * 224
WORLD_VIDEO_MAX_PIXELS = 112 * 112


def message_texts(messages: list[dict]) -> Iterator[str]:
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            yield content
        else:
            yield from (item["text"] for item in content if item.get("type") == "text")


def world_texts(n_per_task: int = 40, seed: int = 0) -> Iterator[str]:
    """The text of ``n_per_task`` samples of every task (the tokenizer's training corpus)."""
    from mimolab.data.world import TASKS, generate
    from mimolab.tokenizer import default_corpus

    yield from default_corpus()
    for task in TASKS:
        for index in range(n_per_task):
            yield from message_texts(generate(task, index, seed=seed).messages)


def world_tokenizer(n_per_task: int = 40, seed: int = 0, out_dir: str | Path | None = None):
    """The synthetic world's tokenizer (about a second to train; deterministic for a seed)."""
    from mimolab.tokenizer import train_synthetic_tokenizer

    return train_synthetic_tokenizer(world_texts(n_per_task, seed), SYNTHETIC_VOCAB_SIZE, out_dir)


def world_processor(tokenizer) -> MiMoVLProcessor:
    return MiMoVLProcessor(tokenizer, image_processor(min_pixels=WORLD_MIN_PIXELS, max_pixels=WORLD_MAX_PIXELS),
                           video_min_pixels=WORLD_MIN_PIXELS, video_max_pixels=WORLD_VIDEO_MAX_PIXELS)


def world_mixture(shares: dict[str, float], processor: MiMoVLProcessor, config: MiMoVLConfig, *, max_length: int,
                  seed: int = 0, difficulty: Difficulty = 0.5, text_only: bool = False) -> MixtureSampler:
    """A resumable stream of tokenised world samples whose token shares follow ``shares``
    (``text_only``: images and videos dropped, for a language-model-only stage)."""
    sources = {task: world_source(task, seed=seed, difficulty=difficulty, text_only=text_only) for task in shares}
    return MixtureSampler(sources, shares, record_tokenizer(processor, config, max_length))
