"""Preprocessing for MiMo-VL: images, videos, chat formatting and placeholder expansion.

Images go through transformers' own ``Qwen2VLImageProcessorPil`` (the torchvision-free backend),
so ``pixel_values`` / ``image_grid_thw`` are exactly transformers'. Videos: transformers' video
processor needs torchvision, so frames are resized, rescaled and normalised by the same PIL image
processor methods and then cut into patches with the video processor's layout (two consecutive
frames per temporal patch, the last frame repeated for an odd count); tests check the result
against per-frame outputs of the image processor. ``second_per_grid_ts`` = temporal_patch / fps.

``MiMoVLProcessor`` mirrors transformers' ``Qwen2_5_VLProcessor`` call (text + images + videos ->
model inputs, each ``<|image_pad|>`` expanded to one token per merged 2x2 patch).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence

MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 1280  # transformers' image defaults
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28  # its video defaults
VIDEO_FPS = 2.0  # MiMo-VL samples videos at 2 frames per second
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_processor(min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, path: str | Path | None = None):
    """transformers' PIL Qwen2-VL image processor, from a checkpoint's preprocessor_config.json if given."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if path is not None and (Path(path) / "preprocessor_config.json").exists():
        # reads both styles: min_pixels/max_pixels (released checkpoints) and size{shortest,longest}_edge
        return Qwen2VLImageProcessorPil.from_pretrained(str(path))
    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


def load_image(image: Any) -> Image.Image:
    """A PIL image in RGB from a path, a PIL image or a (H, W, 3) uint8 array; clear errors."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"cannot use {type(image).__name__} as an image")


def process_images(images: list[Any], processor=None) -> dict[str, torch.Tensor]:
    """pixel_values (patches, 3*2*14*14) and image_grid_thw (n, 3), exactly transformers'."""
    processor = processor or image_processor()
    out = processor(images=[load_image(im) for im in images], return_tensors="pt")
    return {"pixel_values": out["pixel_values"].float(), "image_grid_thw": out["image_grid_thw"].long()}


# ------------------------------------------------------------------------------------- videos
def sample_frame_indices(total: int, source_fps: float, fps: float = VIDEO_FPS, *, min_frames: int = 4,
                         max_frames: int = 768, temporal_patch_size: int = 2) -> list[int]:
    """Frames to keep to resample a clip to ``fps`` (transformers' Qwen2-VL ``sample_frames`` rule)."""
    max_frames = math.floor(min(max_frames, total) / temporal_patch_size) * temporal_patch_size
    n = min(max(total / source_fps * fps, min_frames), max_frames, total)
    n = math.floor(n / temporal_patch_size) * temporal_patch_size
    if n <= 0:
        return list(range(total))  # too short to resample: keep every frame (padded later)
    return torch.arange(0, total, total / n).int().tolist()


def load_video(source: Any, fps: float = VIDEO_FPS, source_fps: float | None = None) -> list[Image.Image]:
    """Frames resampled to ``fps`` from a frame folder, a GIF, an MP4 (if imageio/av is installed) or
    a list of images. For a folder or list, ``source_fps`` says how fast it was recorded (default: it
    already is at ``fps``)."""
    if isinstance(source, (list, tuple)):
        frames = [load_image(f) for f in source]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not files:
                raise ValueError(f"video folder {path} holds no frames ({', '.join(FRAME_SUFFIXES)})")
            frames = [load_image(f) for f in files]
        elif path.suffix.lower() == ".gif":
            frames, source_fps = _read_gif(path)
        elif path.exists():
            frames, source_fps = _read_with_decoder(path)
        else:
            raise FileNotFoundError(f"video {path} does not exist")
    keep = sample_frame_indices(len(frames), source_fps or fps, fps)
    return [frames[i] for i in keep]


def _read_gif(path: Path) -> tuple[list[Image.Image], float]:
    try:
        with Image.open(path) as im:
            frames = [f.convert("RGB") for f in ImageSequence.Iterator(im)]
            duration_ms = im.info.get("duration") or 500
    except OSError as err:
        raise ValueError(f"cannot read GIF {path}: {err}") from err
    return frames, 1000.0 / duration_ms


def _read_with_decoder(path: Path) -> tuple[list[Image.Image], float]:
    try:
        import imageio.v3 as iio
    except ImportError as err:
        raise ImportError(f"reading {path.suffix} videos needs a decoder: pip install imageio[pyav] "
                          "(or give a folder of frames or a GIF)") from err
    meta = iio.immeta(path)
    return [Image.fromarray(f) for f in iio.imiter(path)], float(meta.get("fps", VIDEO_FPS))


def process_video(frames: list[Any], processor=None, *, fps: float = VIDEO_FPS, min_pixels: int = VIDEO_MIN_PIXELS,
                  max_pixels: int = VIDEO_MAX_PIXELS) -> dict[str, torch.Tensor]:
    """One video (frames already at ``fps``) -> pixel_values_videos, video_grid_thw (1, 3), second_per_grid_ts."""
    from transformers.image_utils import SizeDict

    processor = processor or image_processor()
    p, m, tp = processor.patch_size, processor.merge_size, processor.temporal_patch_size
    size = SizeDict(shortest_edge=min_pixels, longest_edge=max_pixels)
    arrays = []
    for frame in frames:
        x = np.asarray(load_image(frame), dtype=np.uint8).transpose(2, 0, 1)  # (C, H, W) as the processor expects
        x = processor.resize(x, size=size, resample=processor.resample, factor=p * m)
        x = processor.normalize(processor.rescale(x, processor.rescale_factor), processor.image_mean, processor.image_std)
        arrays.append(np.asarray(x, dtype=np.float32))
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("all frames of a video must have the same size")
    video = torch.from_numpy(np.stack(arrays))  # (T, C, H, W)
    if pad := -len(frames) % tp:  # an odd frame count repeats the last frame
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = video.shape
    gt, gh, gw = t // tp, h // p, w // p
    # (gt, tp, C, gh/m, m, p, gw/m, m, p) -> (gt, gh/m, gw/m, m, m, C, tp, p, p): merge blocks contiguous
    patches = video.view(gt, tp, c, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return {"pixel_values_videos": patches.reshape(gt * gh * gw, c * tp * p * p).contiguous(),
            "video_grid_thw": torch.tensor([[gt, gh, gw]]), "second_per_grid_ts": torch.tensor([tp / fps])}


# ------------------------------------------------------------------------------------- text
def expand_placeholders(text: str, image_grid_thw: torch.Tensor | None, video_grid_thw: torch.Tensor | None,
                        merge_size: int = 2, start: tuple[int, int] = (0, 0)) -> tuple[str, tuple[int, int]]:
    """Replace the k-th ``<|image_pad|>`` by prod(grid_k) / merge^2 copies (same for videos).

    ``start`` = how many images/videos earlier texts of the batch used; returns the new text and
    the updated counts. Raises when the text has more placeholders than grids."""
    counts = list(start)
    for i, (pad, grids) in enumerate(((IMAGE_PAD, image_grid_thw), (VIDEO_PAD, video_grid_thw))):
        pieces = text.split(pad)
        out = [pieces[0]]
        for piece in pieces[1:]:
            if grids is None or counts[i] >= len(grids):
                kind = "image" if i == 0 else "video"
                raise ValueError(f"the text has more {pad} placeholders than {kind}s were given "
                                 f"({0 if grids is None else len(grids)})")
            n = int(grids[counts[i]].prod()) // merge_size**2
            out.append(pad * n + piece)
            counts[i] += 1
        text = "".join(out)
    return text, (counts[0], counts[1])


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a response: ``<think>...</think>answer``. Without tags the whole text is
    the answer; an unterminated ``<think>`` means the response is all thinking and no answer."""
    match = re.search(r"<think>(.*?)</think>", text, flags=re.S)
    if match:
        return match.group(1).strip(), text[match.end():].strip()
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), ""
    return "", text.strip()


def with_no_think_suffix(messages: list[dict]) -> list[dict]:
    """A copy whose last user message ends with `` /no_think``."""
    messages = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    content = messages[last]["content"]
    if isinstance(content, str):
        messages[last]["content"] = content.rstrip() + " /no_think"
    else:
        items = [dict(c) for c in content]
        texts = [i for i, c in enumerate(items) if c.get("type") == "text"]
        if texts:
            items[texts[-1]]["text"] = items[texts[-1]]["text"].rstrip() + " /no_think"
        else:
            items.append({"type": "text", "text": "/no_think"})
        messages[last]["content"] = items
    return messages


def media_in_messages(messages: list[dict]) -> tuple[list[Any], list[Any]]:
    """The images and videos of a conversation, in order of appearance."""
    images, videos = [], []
    for message in messages:
        if isinstance(message.get("content"), str):
            continue
        for item in message["content"]:
            if item.get("type") == "image" or "image" in item:
                images.append(item.get("image"))
            elif item.get("type") == "video" or "video" in item:
                videos.append(item.get("video"))
    return images, videos


class MiMoVLProcessor:
    """Tokenizer + image/video preprocessing, called like transformers' Qwen2.5-VL processor."""

    def __init__(self, tokenizer, image_processor_=None, *, video_min_pixels: int = VIDEO_MIN_PIXELS,
                 video_max_pixels: int = VIDEO_MAX_PIXELS, fps: float = VIDEO_FPS) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor_ or image_processor()
        self.video_min_pixels, self.video_max_pixels, self.fps = video_min_pixels, video_max_pixels, fps
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "MiMoVLProcessor":
        from mimolab.tokenizer import load_tokenizer

        return cls(load_tokenizer(path), image_processor(path=path), **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(str(path))
        self.image_processor.save_pretrained(str(path))

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True,
                            enable_thinking: bool = True, no_think_style: str = "prefill", tokenize: bool = False,
                            **kwargs):
        """Render a conversation. Thinking off: ``no_think_style="prefill"`` pre-fills an empty think
        block (MiMo-VL's first release); ``"suffix"`` ends the last user message with ``/no_think``
        (the 2508 release's switch) and leaves the answer to the model."""
        if not enable_thinking and no_think_style == "suffix":
            messages, enable_thinking = with_no_think_suffix(messages), True
        elif no_think_style not in ("prefill", "suffix"):
            raise ValueError(f"no_think_style must be 'prefill' or 'suffix', not {no_think_style!r}")
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  enable_thinking=enable_thinking, tokenize=tokenize, **kwargs)

    def __call__(self, text: str | list[str], images: list[Any] | None = None, videos: list[Any] | None = None,
                 *, padding_side: str = "left", return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """``images``: every image of the batch in order; ``videos``: each a list of frames at ``fps``
        (use ``load_video``). Returns input_ids, attention_mask, mm_token_type_ids and the pixels."""
        texts = [text] if isinstance(text, str) else list(text)
        out: dict[str, torch.Tensor] = {}
        if images:
            out.update(process_images(images, self.image_processor))
        if videos:
            per_video = [process_video(v, self.image_processor, fps=self.fps, min_pixels=self.video_min_pixels,
                                       max_pixels=self.video_max_pixels) for v in videos]
            out.update({k: torch.cat([v[k] for v in per_video]) for k in per_video[0]})
        merge, used = self.image_processor.merge_size, (0, 0)
        expanded = []
        for t in texts:
            t, used = expand_placeholders(t, out.get("image_grid_thw"), out.get("video_grid_thw"), merge, used)
            expanded.append(t)
        n_images = 0 if images is None else len(images)
        n_videos = 0 if videos is None else len(videos)
        if used != (n_images, n_videos):
            raise ValueError(f"{n_images} images and {n_videos} videos given but the text has placeholders "
                             f"for {used[0]} and {used[1]}")
        self.tokenizer.padding_side = padding_side
        enc = self.tokenizer(expanded, padding=True, return_tensors=return_tensors, add_special_tokens=False)
        ids = enc["input_ids"]
        types = torch.zeros_like(ids)
        types[ids == self.image_token_id], types[ids == self.video_token_id] = 1, 2
        out.update(input_ids=ids, attention_mask=enc["attention_mask"], mm_token_type_ids=types)
        return out

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
