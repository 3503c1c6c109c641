"""Conversations -> model-ready samples: chat template, placeholder expansion, assistant-only loss,
truncation that never cuts an image, 3D positions. Bad records raise ``BadRecord`` with a reason
(the mixture sampler counts and skips them).

A conversation is a list of chat messages (``role`` + ``content``, content a string or a list of
``{"type": "image" | "video" | "text", ...}`` items); images may be PIL images or paths, videos
frame lists or paths (frame folder, GIF, MP4). Loss covers each assistant reply and its closing
``<|im_end|>``, nothing else: the model learns to answer, not to predict prompts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mimolab.config import MiMoVLConfig
from mimolab.data.mixture import BadRecord
from mimolab.data.schema import check_record
from mimolab.data.packing import TokenizedSample
from mimolab.model.positions import get_rope_index
from mimolab.processing import MiMoVLProcessor, expand_placeholders, load_image, load_video, process_images, process_video

IGNORE_INDEX = -100
ASSISTANT_TURN = re.compile(r"(<\|im_start\|>assistant\n)(.*?<\|im_end\|>)", flags=re.S)


def _media(messages: list[dict], base: Path | None, fps: float) -> tuple[list, list]:
    images, videos = [], []
    for message in messages:
        if isinstance(message.get("content"), str):
            continue
        for item in message["content"]:
            kind = item.get("type") or ("image" if "image" in item else "video" if "video" in item else "text")
            if kind == "text":
                continue
            src = item.get(kind)
            if isinstance(src, str) and base is not None:
                src = base / src
            try:
                if kind == "image":
                    images.append(load_image(src))
                else:
                    videos.append(load_video(src, fps=item.get("fps", fps), source_fps=item.get("fps", fps))
                                  if not isinstance(src, list) else [load_image(f) for f in src])
            except FileNotFoundError as err:
                raise BadRecord(f"missing {kind}", str(err)) from err
            except Image.DecompressionBombError as err:  # a header claiming billions of pixels: never decoded
                raise BadRecord(f"{kind} too large", str(err)) from err
            except (ValueError, OSError, ImportError) as err:
                raise BadRecord(f"unreadable {kind}", str(err)) from err
    return images, videos


def _segments(text: str) -> Iterator[tuple[str, bool]]:
    """(piece, is_target) pieces of a rendered conversation: assistant replies are targets."""
    last = 0
    for match in ASSISTANT_TURN.finditer(text):
        yield text[last:match.end(1)], False
        yield match.group(2), True
        last = match.end()
    yield text[last:], False


def tokenize_conversation(messages: list[dict], processor: MiMoVLProcessor, config: MiMoVLConfig, *,
                          max_length: int, task: str = "text", base_dir: str | Path | None = None,
                          fps: float = 2.0) -> TokenizedSample:
    if not any(m.get("role") == "assistant" for m in messages):
        raise BadRecord("no assistant turn")
    images, videos = _media(messages, Path(base_dir) if base_dir else None, fps)
    vis = {}
    try:
        if images:
            vis.update(process_images(images, processor.image_processor))
        if videos:
            per = [process_video(v, processor.image_processor, fps=fps, min_pixels=processor.video_min_pixels,
                                 max_pixels=processor.video_max_pixels) for v in videos]
            vis.update({k: torch.cat([p[k] for p in per]) for k in per[0]})
    except ValueError as err:  # e.g. smart_resize's aspect ratio limit
        raise BadRecord("unusable image size", str(err)) from err
    merge2 = processor.image_processor.merge_size**2
    for key in ("image_grid_thw", "video_grid_thw"):
        too_big = [g.tolist() for g in vis.get(key, []) if int(g.prod()) // merge2 > max_length]
        if too_big:
            raise BadRecord("image larger than the token budget", f"grid {too_big[0]} needs more than {max_length} tokens")
    text = processor.apply_chat_template(messages, add_generation_prompt=False)
    try:
        text, used = expand_placeholders(text, vis.get("image_grid_thw"), vis.get("video_grid_thw"),
                                         processor.image_processor.merge_size)
    except ValueError as err:
        raise BadRecord("placeholder mismatch", str(err)) from err
    if used != (len(images), len(videos)):
        raise BadRecord("placeholder mismatch", f"{len(images)} images, {len(videos)} videos, placeholders for {used}")
    ids, labels = [], []
    for piece, target in _segments(text):
        piece_ids = processor.tokenizer(piece, add_special_tokens=False)["input_ids"]
        ids += piece_ids
        labels += piece_ids if target else [IGNORE_INDEX] * len(piece_ids)
    if len(ids) > max_length:
        ids, labels, vis = _truncate(ids, labels, vis, max_length, config)
    if all(label == IGNORE_INDEX for label in labels):
        raise BadRecord("no answer left after truncation", f"{len(ids)} tokens kept of a longer conversation")
    return make_sample(ids, labels, vis, config, task)


def _truncate(ids, labels, vis, max_length: int, config: MiMoVLConfig):
    """Cut to max_length, moving the cut before any image/video whose placeholders it would split;
    images and videos that no longer appear are dropped from the pixel inputs."""
    cut = max_length
    starts = [i for i, t in enumerate(ids[:cut]) if t == config.vision_start_token_id]
    if starts and config.vision_end_token_id not in ids[starts[-1]:cut]:
        cut = starts[-1]
    ids, labels = ids[:cut], labels[:cut]
    merge2 = config.vision.spatial_merge_size**2
    for kind, token, pix_key, grid_key in (("image", config.image_token_id, "pixel_values", "image_grid_thw"),
                                           ("video", config.video_token_id, "pixel_values_videos", "video_grid_thw")):
        if grid_key not in vis:
            continue
        grids, kept_tokens, keep = vis[grid_key], ids.count(token), 0
        while keep < len(grids) and kept_tokens >= int(grids[keep].prod()) // merge2:
            kept_tokens -= int(grids[keep].prod()) // merge2
            keep += 1
        n_patches = int(grids[:keep].prod(-1).sum())
        if keep:
            vis[grid_key], vis[pix_key] = grids[:keep], vis[pix_key][:n_patches]
            if kind == "video":
                vis["second_per_grid_ts"] = vis["second_per_grid_ts"][:keep]
        else:
            for key in (grid_key, pix_key) + (("second_per_grid_ts",) if kind == "video" else ()):
                vis.pop(key, None)
    return ids, labels, vis


def vision_inputs(batch: dict) -> dict:
    """The pixel and grid entries of a processor's output (what the model's vision path and make_sample take)."""
    return {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}


def templated_sample(processor: MiMoVLProcessor, config: MiMoVLConfig, text: str, images: list, videos: list,
                     task: str) -> TokenizedSample:
    """A chat text (template already applied) with its media, tokenised with positions and no targets."""
    inputs = processor([text], images=images or None, videos=videos or None)
    ids = inputs["input_ids"][0].tolist()
    return make_sample(ids, [IGNORE_INDEX] * len(ids), vision_inputs(inputs), config, task)


def make_sample(ids: list[int], labels: list[int], vis: dict, config: MiMoVLConfig, task: str) -> TokenizedSample:
    """A TokenizedSample from token ids, labels and processed vision inputs, with its 3D positions."""
    positions, _ = get_rope_index(
        torch.tensor([ids]), image_token_id=config.image_token_id, video_token_id=config.video_token_id,
        spatial_merge_size=config.vision.spatial_merge_size, tokens_per_second=config.vision.tokens_per_second,
        image_grid_thw=vis.get("image_grid_thw"), video_grid_thw=vis.get("video_grid_thw"),
        second_per_grid_ts=vis.get("second_per_grid_ts"))
    grid_list = lambda key: vis[key].tolist() if key in vis else []  # noqa: E731
    return TokenizedSample(
        input_ids=ids, labels=labels, position_ids=positions[:, 0], task=task,
        pixel_values=vis.get("pixel_values"), image_grid_thw=grid_list("image_grid_thw"),
        pixel_values_videos=vis.get("pixel_values_videos"), video_grid_thw=grid_list("video_grid_thw"),
        second_per_grid_ts=vis["second_per_grid_ts"].tolist() if "second_per_grid_ts" in vis else [],
    )


def record_tokenizer(processor: MiMoVLProcessor, config: MiMoVLConfig, max_length: int):
    """``tokenize(record, source_name)`` for MixtureSampler: JSONL records (or in-memory samples
    with ``task`` and ``messages``) -> TokenizedSample, or BadRecord."""

    def tokenize(record: Any, source: str) -> TokenizedSample:
        if isinstance(record, (dict, BadRecord)) or not hasattr(record, "messages"):
            check_record(record)  # the JSONL format's checks: every malformed record is a BadRecord
            messages, task, base = record["messages"], record.get("task", source), record.get("_base_dir")
        else:  # a world Sample
            messages, task, base = record.messages, record.task, None
        return tokenize_conversation(messages, processor, config, max_length=max_length, task=task, base_dir=base)
    return tokenize
