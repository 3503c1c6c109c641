"""Preprocessing for MiMo-VL: images, videos, chat formatting and placeholder expansion.

Images go through transformers' own ``Qwen2VLImageProcessorPil`` (the torchvision-free backend),
so ``pixel_values`` / ``image_grid_thw`` are exactly transformers'.

Videos: transformers' ``Qwen2VLVideoProcessor`` needs torchvision, so its steps are reproduced
here with the torch calls torchvision makes on CPU (transformers 5.23,
``models/qwen2_vl/video_processing_qwen2_vl.py``): frames as a uint8 (T, 3, H, W) tensor;
``smart_resize`` of the frame size with the *video* pixel limits (optionally capped per frame,
``cap_pixels_per_frame``); bicubic antialiased ``interpolate`` on the uint8 tensor (what
``torchvision.transforms.v2.functional.resize`` runs on CPU; PIL's bicubic differs from it, often
by 1 on ~0.5 % of the values, far more when one side shrinks as the other grows); rescale and
normalise fused into one ``(x - 255 mean) / (255 std)`` in float32; the last frame repeated to an
even count; the same patch flatten order. ``second_per_grid_ts`` = temporal_patch_size / fps.
Tests check all of it, bit for bit, against transformers' video processor itself.

``MiMoVLProcessor`` mirrors transformers' ``Qwen2_5_VLProcessor``: text + images + videos -> model
inputs, each ``<|image_pad|>`` / ``<|video_pad|>`` expanded to one token per merged 2x2 patch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence

from mimolab.tokenizer import split_thinking, with_no_think  # noqa: F401  (chat helpers, re-exported)

MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 1280  # transformers' image defaults (3136, 1,003,520)
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28  # its video defaults
MAX_VIDEO_TOKENS = 128000  # transformers' budget for cap_pixels_per_frame
VIDEO_FPS = 2.0  # MiMo-VL samples videos at 2 frames per second
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def resized_size(image: Image.Image, image_processor) -> tuple[int, int]:
    """(width, height) of ``image`` as ``image_processor`` resizes it: the frame of the pixel coordinates
    a Qwen2.5-VL model reads and writes (boxes, points)."""
    grid = image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    return int(grid[2]) * image_processor.patch_size, int(grid[1]) * image_processor.patch_size


def image_processor(min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, path: str | Path | None = None):
    """transformers' PIL Qwen2-VL image processor; from a checkpoint directory when ``path`` is given."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if path is None:
        return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    if not any((Path(path) / f).exists() for f in ("preprocessor_config.json", "processor_config.json")):
        raise FileNotFoundError(f"{path} has no preprocessor_config.json (nor processor_config.json)")
    # reads both styles: min_pixels/max_pixels (released checkpoints) and size{shortest,longest}_edge
    return Qwen2VLImageProcessorPil.from_pretrained(str(path))


def video_settings(path: str | Path) -> dict[str, Any]:
    """MiMoVLProcessor's video keyword arguments from a checkpoint directory, looked up where
    transformers looks: processor_config.json["video_processor"], video_preprocessor_config.json,
    then preprocessor_config.json (so released checkpoints use their image pixel limits for video)."""
    path, d = Path(path), None
    if (path / "processor_config.json").exists():
        d = json.loads((path / "processor_config.json").read_text()).get("video_processor")
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        if d is None and (path / name).exists():
            d = json.loads((path / name).read_text())
    if d is None:
        return {}
    size = d.get("size") or {}
    out = {"video_min_pixels": d.get("min_pixels", size.get("shortest_edge", size.get("min_pixels"))),
           "video_max_pixels": d.get("max_pixels", size.get("longest_edge", size.get("max_pixels"))),
           "cap_pixels_per_frame": d.get("cap_pixels_per_frame"), "max_video_tokens": d.get("max_video_tokens")}
    return {k: v for k, v in out.items() if v is not None}


def load_image(image: Any) -> Image.Image:
    """An RGB PIL image from a path, a PIL image or a (H, W[, C]) uint8 array. Transparency is
    composited onto white, as transformers' processors do."""
    from transformers.image_transforms import convert_to_rgb

    if isinstance(image, str) and image.startswith("file://"):
        image = image[len("file://"):]
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with Image.open(path) as im:
                im.load()
                return Image.fromarray(convert_to_rgb(im, return_numpy=True))
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        return Image.fromarray(convert_to_rgb(image, return_numpy=True))
    raise TypeError(f"cannot use {type(image).__name__} as an image")


def process_images(images: list[Any], processor=None) -> dict[str, torch.Tensor]:
    """pixel_values (patches, 3*2*14*14) and image_grid_thw (n, 3), exactly transformers'."""
    processor = processor or image_processor()
    out = processor(images=[load_image(im) for im in images], return_tensors="pt")
    return {"pixel_values": out["pixel_values"].float(), "image_grid_thw": out["image_grid_thw"].long()}


# ------------------------------------------------------------------------------------- videos
def sample_frame_indices(total: int, source_fps: float, fps: float = VIDEO_FPS, *, min_frames: int = 4,
                         max_frames: int = 768, temporal_patch_size: int = 2) -> list[int]:
    """Frames to keep to resample a clip to ``fps`` (transformers' Qwen2-VL ``sample_frames`` rule;
    where that rule leaves no frame, a clip shorter than one temporal patch, all frames are kept)."""
    max_frames = math.floor(min(max_frames, total) / temporal_patch_size) * temporal_patch_size
    n = min(max(total / source_fps * fps, min_frames), max_frames, total)
    n = math.floor(n / temporal_patch_size) * temporal_patch_size
    if n <= 0:
        return list(range(total))
    return torch.arange(0, total, total / n).int().tolist()


def load_video(source: Any, fps: float = VIDEO_FPS, source_fps: float | None = None) -> list[Image.Image]:
    """Frames resampled to ``fps`` from a frame folder, a GIF, an MP4 (with PyAV, OpenCV or imageio
    installed) or a list of images. For a folder or list, ``source_fps`` says how fast it was
    recorded (default: it already is at ``fps``)."""
    if isinstance(source, (list, tuple)):
        frames = [load_image(f) for f in source]
    else:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
            if not files:
                raise ValueError(f"video folder {path} holds no frames ({', '.join(FRAME_SUFFIXES)})")
            frames = [load_image(f) for f in files]
        elif not path.exists():
            raise FileNotFoundError(f"video {path} does not exist")
        elif path.suffix.lower() == ".gif":
            frames, source_fps = _read_gif(path)
        else:
            frames, source_fps = _read_with_decoder(path)
    keep = sample_frame_indices(len(frames), source_fps or fps, fps)
    return [frames[i] for i in keep]


def _read_gif(path: Path) -> tuple[list[Image.Image], float]:
    try:
        with Image.open(path) as im:
            frames, durations = [], []
            for frame in ImageSequence.Iterator(im):
                frames.append(load_image(frame))
                durations.append(frame.info.get("duration") or 500)
    except OSError as err:
        raise ValueError(f"cannot read GIF {path}: {err}") from err
    return frames, 1000.0 * len(durations) / sum(durations)  # frames are taken as evenly spaced


def _read_with_decoder(path: Path) -> tuple[list[Image.Image], float]:
    """Decode with whichever of PyAV, OpenCV, imageio is installed."""
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_image() for f in container.decode(stream)]
            return frames, float(stream.average_rate or VIDEO_FPS)
    except ImportError:
        pass
    try:
        import cv2

        cap, frames = cv2.VideoCapture(str(path)), []
        while (ok_frame := cap.read())[0]:
            frames.append(Image.fromarray(cv2.cvtColor(ok_frame[1], cv2.COLOR_BGR2RGB)))
        fps = cap.get(cv2.CAP_PROP_FPS) or VIDEO_FPS
        cap.release()
        return frames, float(fps)
    except ImportError:
        pass
    try:
        import imageio.v3 as iio
    except ImportError as err:
        raise ImportError(f"reading {path.suffix} videos needs a decoder: pip install av (or opencv-python, or "
                          "imageio[pyav]); or give a folder of frames or a GIF") from err
    return [Image.fromarray(f) for f in iio.imiter(path)], float(iio.immeta(path).get("fps", VIDEO_FPS))


def video_tensor(frames: Any) -> torch.Tensor:
    """Frames (images, paths, or a uint8 (T, H, W, 3) array/tensor) as a uint8 (T, 3, H, W) tensor."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4 and frames.shape[-1] == 3:
        array = torch.as_tensor(frames)
        if array.dtype != torch.uint8:
            raise TypeError(f"a video array must be uint8, not {array.dtype}")
    else:
        images = [np.asarray(load_image(f), dtype=np.uint8) for f in frames]
        if len({im.shape for im in images}) > 1:
            raise ValueError("all frames of a video must have the same size")
        array = torch.from_numpy(np.stack(images))
    if len(array) == 0:
        raise ValueError("a video needs at least one frame")
    return array.permute(0, 3, 1, 2).contiguous()


def video_size(height: int, width: int, num_frames: int, *, min_pixels: int, max_pixels: int, factor: int = 28,
               temporal_patch_size: int = 2, cap_pixels_per_frame: bool = False,
               max_video_tokens: int = MAX_VIDEO_TOKENS) -> tuple[int, int]:
    """The resized frame size (Qwen2VLVideoProcessor.resize's rule)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    if cap_pixels_per_frame:  # each frame gets an even share of the whole video's pixel budget
        total = int(max_video_tokens * factor * factor * 0.9)
        max_pixels = max(min(max_pixels, total * temporal_patch_size // num_frames), int(min_pixels * 1.05))
    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def process_video(frames: Any, processor=None, *, fps: float = VIDEO_FPS, min_pixels: int = VIDEO_MIN_PIXELS,
                  max_pixels: int = VIDEO_MAX_PIXELS, cap_pixels_per_frame: bool = False,
                  max_video_tokens: int = MAX_VIDEO_TOKENS) -> dict[str, torch.Tensor]:
    """One video (frames already at ``fps``) -> pixel_values_videos, video_grid_thw (1, 3),
    second_per_grid_ts (1,), as transformers' Qwen2VLVideoProcessor computes them on CPU.
    ``processor`` (an image processor) supplies patch sizes, mean and std (video defaults are equal)."""
    processor = processor or image_processor()
    p, m, tp = processor.patch_size, processor.merge_size, processor.temporal_patch_size
    video = video_tensor(frames)  # (T, 3, H, W) uint8
    t, c, h, w = video.shape
    rh, rw = video_size(h, w, t, min_pixels=min_pixels, max_pixels=max_pixels, factor=p * m, temporal_patch_size=tp,
                        cap_pixels_per_frame=cap_pixels_per_frame, max_video_tokens=max_video_tokens)
    if (rh, rw) != (h, w):  # torch resizes uint8 bicubic natively on CPU, as torchvision lets it
        video = torch.nn.functional.interpolate(video, size=[rh, rw], mode="bicubic", align_corners=False,
                                                antialias=True)
    # transformers fuses rescale into normalisation: mean and std scaled by 1 / rescale_factor, in float32
    mean = (torch.tensor(processor.image_mean) * (1.0 / processor.rescale_factor)).view(-1, 1, 1)
    std = (torch.tensor(processor.image_std) * (1.0 / processor.rescale_factor)).view(-1, 1, 1)
    video = video.to(torch.float32).sub_(mean).div_(std)
    if pad := -t % tp:  # an odd frame count repeats the last frame
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    gt, gh, gw = len(video) // tp, rh // p, rw // p
    # (gt, tp, C, gh/m, m, p, gw/m, m, p) -> (gt, gh/m, gw/m, m, m, C, tp, p, p): merge blocks contiguous
    patches = video.view(gt, tp, c, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return {"pixel_values_videos": patches.reshape(gt * gh * gw, c * tp * p * p),
            "video_grid_thw": torch.tensor([[gt, gh, gw]]), "second_per_grid_ts": torch.tensor([tp / fps])}


# ------------------------------------------------------------------------------------- text
def expand_placeholders(text: str, image_grid_thw: torch.Tensor | None, video_grid_thw: torch.Tensor | None,
                        merge_size: int = 2, start: tuple[int, int] = (0, 0)) -> tuple[str, tuple[int, int]]:
    """Replace the k-th ``<|image_pad|>`` by prod(grid_k) / merge^2 copies (same for videos).

    ``start`` = how many images/videos earlier texts of the batch used; returns the new text and
    the updated counts. Raises when the text has more placeholders than grids are left."""
    counts = list(start)
    for i, (pad, grids) in enumerate(((IMAGE_PAD, image_grid_thw), (VIDEO_PAD, video_grid_thw))):
        pieces = text.split(pad)
        n_grids = 0 if grids is None else len(grids)
        if len(pieces) > 1 and counts[i] + len(pieces) - 1 > n_grids:
            kind = ("image", "video")[i]
            raise ValueError(f"too few {kind}s: the text has {len(pieces) - 1} {pad} placeholder(s) but only "
                             f"{n_grids - counts[i]} of the {n_grids} {kind} grid(s) are left for it")
        out = [pieces[0]]
        for piece in pieces[1:]:
            out.append(pad * (int(grids[counts[i]].prod()) // merge_size**2) + piece)
            counts[i] += 1
        text = "".join(out)
    return text, (counts[0], counts[1])


def media_in_messages(messages: list[dict]) -> tuple[list[Any], list[Any]]:
    """The images and videos of a conversation, in order of appearance (as the template counts them)."""
    images, videos = [], []
    for message in messages:
        if isinstance(message.get("content"), str):
            continue
        for item in message["content"]:
            if item.get("type") == "image" or "image" in item or "image_url" in item:
                images.append(item.get("image", item.get("image_url")))
            elif item.get("type") == "video" or "video" in item:
                videos.append(item.get("video"))
    return images, videos



def _count_check(texts: list[str], pad: str, kind: str, given: list[int] | int) -> None:
    """Raise naming the text when placeholders and images/videos disagree (``given``: per text, or in all)."""
    found = [t.count(pad) for t in texts]
    if isinstance(given, int):
        if sum(found) != given:
            raise ValueError(f"the text(s) hold {sum(found)} {pad} placeholder(s) in all but {given} {kind}(s) "
                             f"were given: put one <|vision_start|>{pad}<|vision_end|> per {kind}")
        return
    for i, (n, g) in enumerate(zip(found, given)):
        if n != g:
            raise ValueError(f"text {i} holds {n} {pad} placeholder(s) but {g} {kind}(s) were given for it")


class MiMoVLProcessor:
    """Tokenizer + image/video preprocessing, called like transformers' Qwen2_5_VLProcessor::

        proc = MiMoVLProcessor.from_pretrained(checkpoint_dir)
        chat = [{"role": "user", "content": [{"type": "image", "image": "cat.png"},
                                             {"type": "text", "text": "What is this?"}]}]
        batch = proc(proc.apply_chat_template(chat), images=["cat.png"])  # or apply_chat_template(chat, tokenize=True)
        answer = proc.batch_decode(model.generate(**batch)[:, batch["input_ids"].shape[1]:])
    """

    def __init__(self, tokenizer, image_processor_=None, *, video_min_pixels: int = VIDEO_MIN_PIXELS,
                 video_max_pixels: int = VIDEO_MAX_PIXELS, fps: float = VIDEO_FPS, cap_pixels_per_frame: bool = False,
                 max_video_tokens: int = MAX_VIDEO_TOKENS) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor_ or image_processor()
        self.video_min_pixels, self.video_max_pixels, self.fps = video_min_pixels, video_max_pixels, fps
        self.cap_pixels_per_frame, self.max_video_tokens = cap_pixels_per_frame, max_video_tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        if None in (self.image_token_id, self.video_token_id) or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_PAD} / {VIDEO_PAD} token: not a Qwen2.5-VL tokenizer")

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> "MiMoVLProcessor":
        """A checkpoint directory: its tokenizer, preprocessor_config.json and video settings."""
        from mimolab.tokenizer import load_tokenizer

        return cls(load_tokenizer(path), image_processor(path=path), **{**video_settings(path), **kwargs})

    def save_pretrained(self, path: str | Path) -> None:
        """Tokenizer files, preprocessor_config.json and a video_preprocessor_config.json that
        transformers' Qwen2VLVideoProcessor loads."""
        self.tokenizer.save_pretrained(str(path))
        self.image_processor.save_pretrained(str(path))
        ip = self.image_processor
        video = {"video_processor_type": "Qwen2VLVideoProcessor", "processor_class": "Qwen2_5_VLProcessor",
                 "size": {"shortest_edge": self.video_min_pixels, "longest_edge": self.video_max_pixels},
                 "patch_size": ip.patch_size, "temporal_patch_size": ip.temporal_patch_size,
                 "merge_size": ip.merge_size, "image_mean": list(ip.image_mean), "image_std": list(ip.image_std),
                 "do_resize": True, "resample": 3, "do_rescale": True, "rescale_factor": ip.rescale_factor,
                 "do_normalize": True, "do_convert_rgb": True, "do_sample_frames": False, "fps": self.fps,
                 "cap_pixels_per_frame": self.cap_pixels_per_frame, "max_video_tokens": self.max_video_tokens}
        (Path(path) / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")

    def apply_chat_template(self, messages: list[dict] | list[list[dict]], *, add_generation_prompt: bool = True,
                            enable_thinking: bool = True, no_think_style: str = "prefill", tokenize: bool = False,
                            **kwargs: Any):
        """Render a conversation (or a list of them) with the tokenizer's chat template.

        Thinking off (``enable_thinking=False``): ``no_think_style="prefill"`` pre-fills an empty think
        block; ``"suffix"`` also ends the last user message with ``/no_think`` (the 2508 release's
        switch), ``"tag"`` with a ``<no_think>`` line (the first release's). ``tokenize=True`` loads
        the images/videos named in the messages and returns ``self(...)``'s model inputs."""
        markers = {"prefill": "", "suffix": " /no_think", "tag": "\n<no_think>"}
        if no_think_style not in markers:
            raise ValueError(f"no_think_style must be one of {sorted(markers)}, not {no_think_style!r}")
        batched = bool(messages) and isinstance(messages[0], list)
        conversations = messages if batched else [messages]
        if not enable_thinking and markers[no_think_style]:
            conversations = [with_no_think(c, markers[no_think_style]) for c in conversations]
        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=add_generation_prompt, tokenize=False,
                                                    enable_thinking=enable_thinking, **kwargs) for c in conversations]
        if not tokenize:
            return texts if batched else texts[0]
        media = [media_in_messages(c) for c in conversations]
        images, videos = [im for i, _ in media for im in i], [v for _, vs in media for v in vs]
        return self(texts, images=images or None, videos=videos or None)

    def __call__(self, text: str | list[str], images: list[Any] | None = None, videos: list[Any] | None = None, *,
                 fps: float | list[float] | None = None, padding_side: str = "left", return_tensors: str = "pt"):
        """Model inputs for a batch of texts: input_ids, attention_mask, mm_token_type_ids (0 text,
        1 image, 2 video), pixel_values + image_grid_thw, pixel_values_videos + video_grid_thw +
        second_per_grid_ts. ``images``: every image of the batch in order, or one list per text.
        ``videos``: each a list of frames at ``fps`` (default ``self.fps``), a uint8 (T, H, W, 3)
        array, or a path for ``load_video``."""
        from transformers import BatchFeature

        if return_tensors != "pt":
            raise ValueError("MiMoVLProcessor returns torch tensors only (return_tensors='pt')")
        texts = [text] if isinstance(text, str) else list(text)
        images, videos = list(images or []), list(videos or [])
        nested = bool(images) and all(isinstance(i, (list, tuple)) for i in images)
        _count_check(texts, IMAGE_PAD, "image", [len(i) for i in images] if nested else len(images))
        _count_check(texts, VIDEO_PAD, "video", len(videos))
        if nested:
            images = [im for per_text in images for im in per_text]
        out: dict[str, torch.Tensor] = {}
        if images:
            out.update(process_images(images, self.image_processor))
        if videos:
            out.update(self._videos(videos, fps))
        merge, used, expanded = self.image_processor.merge_size, (0, 0), []
        for t in texts:
            t, used = expand_placeholders(t, out.get("image_grid_thw"), out.get("video_grid_thw"), merge, used)
            expanded.append(t)
        enc = self.tokenizer(expanded, padding=True, padding_side=padding_side, return_tensors="pt")
        ids = enc["input_ids"]
        types = torch.zeros_like(ids)
        types[ids == self.image_token_id], types[ids == self.video_token_id] = 1, 2
        return BatchFeature({"input_ids": ids, "attention_mask": enc["attention_mask"], "mm_token_type_ids": types,
                             **out})

    def _videos(self, videos: list[Any], fps: float | list[float] | None) -> dict[str, torch.Tensor]:
        rates = fps if isinstance(fps, (list, tuple)) else [fps or self.fps] * len(videos)
        if len(rates) != len(videos):
            raise ValueError(f"{len(rates)} fps values for {len(videos)} videos")
        per_video = []
        for video, rate in zip(videos, rates):
            frames = load_video(video, fps=rate) if isinstance(video, (str, Path)) else video
            per_video.append(process_video(frames, self.image_processor, fps=rate, min_pixels=self.video_min_pixels,
                                           max_pixels=self.video_max_pixels, max_video_tokens=self.max_video_tokens,
                                           cap_pixels_per_frame=self.cap_pixels_per_frame))
        return {k: torch.cat([v[k] for v in per_video]) for k in per_video[0]}

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)
