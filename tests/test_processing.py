"""Preprocessing equals transformers' own: images against ``Qwen2VLImageProcessorPil`` in process;
videos and the whole processor call against ``Qwen2VLVideoProcessor`` / ``Qwen2_5_VLProcessor``.

Those two need torchvision, which cannot be installed beside the CPU torch wheel. The reference
therefore runs in a subprocess where, if torchvision is missing, a stand-in package provides the
only three torchvision functions they call: ``resize`` (torchvision's ``resize_image`` CPU path:
``torch.nn.functional.interpolate``, natively on uint8 for bicubic), ``normalize`` (torchvision's
``normalize_image``: subtract, divide) and ``grayscale_to_rgb``. Everything else (kwargs, RGB
conversion, smart_resize, per-frame cap, fused rescale+normalise, padding odd frame counts,
patchify, placeholder expansion, mm_token_type_ids, second_per_grid_ts) is transformers' code.
"""

import json
import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from mimolab.processing import (
    MiMoVLProcessor, expand_placeholders, image_processor, load_video, process_images, process_video,
    sample_frame_indices, split_thinking, video_settings,
)
from mimolab.tokenizer import train_synthetic_tokenizer

SMALL = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def random_image(h, w, seed=0, mode="RGB"):
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode)


def random_video(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tokenizer():
    return train_synthetic_tokenizer()


# ------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("h,w,expected", [(224, 224, [1, 16, 16]), (480, 640, [1, 34, 46]), (37, 100, None),
                                          (301, 17, None), (1, 150, None), (3000, 2000, None)])
def test_images_equal_transformers(h, w, expected):
    image = random_image(h, w)
    ours = process_images([image])
    ref = Qwen2VLImageProcessorPil()(images=[image], return_tensors="pt")
    assert torch.equal(ours["pixel_values"], ref["pixel_values"].float())
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    if expected:
        assert ours["image_grid_thw"][0].tolist() == expected


@pytest.mark.parametrize("min_pixels,max_pixels", [(28 * 28 * 8, 28 * 28 * 40), (28 * 28 * 256, 28 * 28 * 1024),
                                                   (3136, 28 * 28 * 4)])
def test_image_batch_and_pixel_limits_equal_transformers(min_pixels, max_pixels):
    images = [random_image(90, 200, 1), random_image(500, 300, 2), random_image(28, 28, 3), random_image(64, 48, 4, "RGBA"),
              random_image(33, 77, 5, "L")]
    ours = process_images(images, image_processor(min_pixels=min_pixels, max_pixels=max_pixels))
    ref = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)(images=images, return_tensors="pt")
    assert torch.equal(ours["pixel_values"], ref["pixel_values"].float())
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])


def test_released_style_preprocessor_config_is_read(tmp_path):
    """MiMo-VL / Qwen2.5-VL checkpoints store min_pixels / max_pixels at the top level; transformers
    then uses them for videos too."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 28 * 28 * 20, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2_5_VLImageProcessor"}))
    proc = image_processor(path=tmp_path)
    grid = process_images([random_image(500, 500)], proc)["image_grid_thw"][0]
    assert int(grid.prod()) <= 20 * 4 and proc.size["longest_edge"] == 28 * 28 * 20
    assert video_settings(tmp_path) == {"video_min_pixels": 3136, "video_max_pixels": 28 * 28 * 20}
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        image_processor(path=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------- videos
# (name, frames, kwargs) compared with Qwen2VLVideoProcessor
VIDEO_CASES = [
    ("resized, 4 frames", random_video(4, 60, 90), SMALL),
    ("odd count, no resize", random_video(5, 56, 84, 1), SMALL),
    ("odd count, default limits upscale", random_video(3, 100, 37, 2), {}),
    ("per-frame cap binds", random_video(6, 112, 168, 3), dict(**SMALL, cap_pixels_per_frame=True, max_video_tokens=40)),
    ("one frame", random_video(1, 70, 70, 4), SMALL),
]

STUB = {
    "__init__.py": "__version__ = '0.28.0'\nfrom . import io, transforms\n",
    "io.py": "",
    "transforms/__init__.py": """
        import enum
        class InterpolationMode(enum.Enum):
            NEAREST = "nearest"; NEAREST_EXACT = "nearest-exact"; BILINEAR = "bilinear"; BICUBIC = "bicubic"
            BOX = "box"; HAMMING = "hamming"; LANCZOS = "lanczos"
        from . import functional, v2
        """,
    "transforms/functional.py": "from torchvision.transforms import InterpolationMode\ndef pil_to_tensor(p): raise NotImplementedError\n",
    "transforms/v2/__init__.py": "from . import functional\n",
    "transforms/v2/functional.py": """
        import torch
        from torchvision.transforms import InterpolationMode
        I = InterpolationMode

        def resize(image, size, interpolation=I.BILINEAR, max_size=None, antialias=True):
            # torchvision.transforms.v2.functional.resize_image on CPU (torchvision 0.2x)
            antialias = bool(antialias) and interpolation in (I.BILINEAR, I.BICUBIC)
            align_corners = False if interpolation in (I.BILINEAR, I.BICUBIC) else None
            shape, (c, h, w), (nh, nw) = image.shape, image.shape[-3:], size
            if (nh, nw) == (h, w):
                return image
            dtype, native = image.dtype, [torch.float32, torch.float64] + [torch.uint8] * (interpolation == I.BICUBIC)
            image = image.reshape(-1, c, h, w)
            image = image if dtype in native else image.to(torch.float32)
            image = torch.nn.functional.interpolate(image, size=[nh, nw], mode=interpolation.value,
                                                    align_corners=align_corners, antialias=antialias)
            image = image if dtype in native else image.round_().to(dtype)
            return image.reshape(shape[:-3] + (c, nh, nw))

        def normalize(image, mean, std, inplace=False):
            mean = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
            std = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
            return (image.sub_(mean) if inplace else image.sub(mean)).div_(std)

        def grayscale_to_rgb(image):
            return image if image.shape[-3] >= 3 else image.repeat_interleave(3, dim=-3)
        """,
}

REFERENCE = """
    import sys, torch
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    from transformers.video_utils import VideoMetadata
    job = torch.load(sys.argv[1], weights_only=False)
    out = {"videos": []}
    for frames, kw in job["videos"]:
        kw = dict(kw)
        size = {"shortest_edge": kw.pop("min_pixels", 128 * 28 * 28), "longest_edge": kw.pop("max_pixels", 768 * 28 * 28)}
        cap = kw.pop("cap_pixels_per_frame", False)
        vp = Qwen2VLVideoProcessor(size=size, **kw)
        out["videos"].append(dict(vp(videos=[frames], return_tensors="pt", cap_pixels_per_frame=cap)))
    d, b = job["saved_dir"], job["batch"]
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil.from_pretrained(d),
                               tokenizer=AutoTokenizer.from_pretrained(d),
                               video_processor=Qwen2VLVideoProcessor.from_pretrained(d))
    meta = [VideoMetadata(total_num_frames=len(v), fps=2.0) for v in b["videos"]]
    out["batch"] = dict(proc(text=b["texts"], images=b["images"], videos=b["videos"], return_tensors="pt",
                             padding=True, padding_side="left", videos_kwargs={"video_metadata": meta}))
    torch.save(out, sys.argv[2])
"""

BATCH_TEXTS = ["<|vision_start|><|image_pad|><|vision_end|>one <|vision_start|><|image_pad|><|vision_end|>two",
               "no image at all", "<|vision_start|><|video_pad|><|vision_end|>and <|vision_start|><|image_pad|><|vision_end|>"]


def batch_inputs():
    images = [random_image(70, 50, 7), random_image(33, 120, 8, "RGBA"), random_image(90, 90, 9)]
    return BATCH_TEXTS, images, [random_video(3, 60, 90, 10)]


@pytest.fixture(scope="module")
def hf_reference(tokenizer, tmp_path_factory):
    """transformers' outputs for VIDEO_CASES and the batch, from one subprocess (~5 s)."""
    root = tmp_path_factory.mktemp("hf_reference")
    saved = root / "processor"
    MiMoVLProcessor(tokenizer, image_processor(**SMALL), video_min_pixels=SMALL["min_pixels"],
                    video_max_pixels=SMALL["max_pixels"]).save_pretrained(saved)
    texts, images, videos = batch_inputs()
    torch.save({"videos": [(frames, kw) for _, frames, kw in VIDEO_CASES], "saved_dir": str(saved),
                "batch": {"texts": texts, "images": images, "videos": videos}}, root / "job.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if find_spec("torchvision") is None:
        for name, body in STUB.items():
            (root / "stub" / "torchvision" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "stub" / "torchvision" / name).write_text(textwrap.dedent(body))
        env["PYTHONPATH"] = os.pathsep.join([str(root / "stub"), env.get("PYTHONPATH", "")])
    (root / "reference.py").write_text(textwrap.dedent(REFERENCE))
    run = subprocess.run([sys.executable, str(root / "reference.py"), str(root / "job.pt"), str(root / "out.pt")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(root / "out.pt", weights_only=False)


@pytest.mark.parametrize("case", range(len(VIDEO_CASES)), ids=[c[0] for c in VIDEO_CASES])
def test_video_equals_transformers_video_processor(case, hf_reference):
    _, frames, kw = VIDEO_CASES[case]
    ref = hf_reference["videos"][case]
    for given in (frames, [Image.fromarray(f) for f in frames]):  # a uint8 array or a list of PIL frames
        ours = process_video(given, **kw, fps=2.0)
        assert torch.equal(ours["video_grid_thw"], ref["video_grid_thw"])
        assert torch.equal(ours["pixel_values_videos"], ref["pixel_values_videos"])
    assert int(ours["video_grid_thw"][0, 0]) == (len(frames) + 1) // 2  # odd counts repeat the last frame


def test_video_seconds_per_temporal_patch():
    frames = random_video(4, 56, 56)
    assert process_video(frames, **SMALL, fps=2.0)["second_per_grid_ts"].tolist() == [1.0]
    assert process_video(frames, **SMALL, fps=4.0)["second_per_grid_ts"].tolist() == [0.5]


def test_processor_call_equals_qwen2_5_vl_processor(tokenizer, hf_reference):
    """Batch of texts with 2, 0 and 1 images and a video, left padding: every output equal."""
    ref = hf_reference["batch"]
    texts, images, videos = batch_inputs()
    proc = MiMoVLProcessor(tokenizer, image_processor(**SMALL), video_min_pixels=SMALL["min_pixels"],
                           video_max_pixels=SMALL["max_pixels"])
    ours = proc(texts, images=images, videos=videos, fps=2.0)
    assert sorted(ours.keys()) == sorted(ref.keys())
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key
    nested = proc(texts, images=[images[:2], [], images[2:]], videos=videos)
    assert all(torch.equal(nested[k], ours[k]) for k in ours)
    right = proc(texts, images=images, videos=videos, padding_side="right")["attention_mask"]
    assert right[1, 0] == 1 and right[1, -1] == 0 and torch.equal(right.sum(1), ours["attention_mask"].sum(1))


def test_save_and_load_keep_video_settings(tokenizer, tmp_path):
    proc = MiMoVLProcessor(tokenizer, image_processor(**SMALL), video_min_pixels=28 * 28 * 2, video_max_pixels=28 * 28 * 8,
                           cap_pixels_per_frame=True, max_video_tokens=999)
    proc.save_pretrained(tmp_path)
    loaded = MiMoVLProcessor.from_pretrained(tmp_path)
    assert (loaded.video_min_pixels, loaded.video_max_pixels) == (28 * 28 * 2, 28 * 28 * 8)
    assert (loaded.cap_pixels_per_frame, loaded.max_video_tokens) == (True, 999)
    assert loaded.image_processor.size["longest_edge"] == SMALL["max_pixels"]


def test_frame_sampling_follows_fps_and_gif_timing(tmp_path):
    assert sample_frame_indices(30, source_fps=10, fps=2) == [0, 5, 10, 15, 20, 25]
    assert sample_frame_indices(3, source_fps=2, fps=2) == [0, 1]  # even count for 2-frame temporal patches
    frames = [random_image(28, 28, seed=i) for i in range(8)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=250)  # 4 fps, 2 s
    assert len(load_video(gif, fps=2.0)) == 4
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        f.save(folder / f"{i:03d}.png")
    assert len(load_video(folder, fps=2.0, source_fps=2.0)) == 8
    assert len(load_video(folder, fps=2.0, source_fps=8.0)) == 4  # resampled 8 fps -> 2 fps (min 4 frames)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_video(tmp_path / "missing.mp4")


def test_mp4_needs_a_decoder(tmp_path):
    if any(find_spec(m) for m in ("av", "cv2", "imageio")):
        pytest.skip("a video decoder is installed")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ImportError, match="pip install av"):
        load_video(tmp_path / "clip.mp4")


# ------------------------------------------------------------------------------------- placeholders
def test_placeholder_expansion_counts_and_errors():
    grids = torch.tensor([[1, 4, 6], [1, 2, 2]])
    text, used = expand_placeholders("a<|image_pad|>b<|image_pad|>c", grids, None)
    assert text.count("<|image_pad|>") == 24 // 4 + 4 // 4 and used == (2, 0)
    videos = torch.tensor([[3, 4, 4]])
    text, used = expand_placeholders("<|video_pad|>", None, videos, start=(5, 0))
    assert text.count("<|video_pad|>") == 3 * 4 * 4 // 4 and used == (5, 1)
    with pytest.raises(ValueError, match="too few images: the text has 3"):
        expand_placeholders("<|image_pad|><|image_pad|><|image_pad|>", grids, None)


def test_processor_counts_mismatch_raise_clear_errors(tokenizer):
    proc = MiMoVLProcessor(tokenizer, image_processor(**SMALL))
    one = "<|vision_start|><|image_pad|><|vision_end|>what?"
    with pytest.raises(ValueError, match="1 <\\|image_pad\\|> placeholder\\(s\\) in all but 2 image"):
        proc(one, images=[random_image(56, 56), random_image(56, 56)])
    with pytest.raises(ValueError, match="but 0 image"):
        proc(one)
    with pytest.raises(ValueError, match="text 1 holds 0"):
        proc([one, "plain"], images=[[random_image(56, 56)], [random_image(56, 56)]])
    with pytest.raises(ValueError, match="video"):
        proc("plain", videos=[random_video(2, 56, 56)])


def test_processor_from_chat_messages(tokenizer, tmp_path):
    """apply_chat_template(tokenize=True) loads the media named in the messages and expands them."""
    random_image(70, 50).save(tmp_path / "a.png")
    proc = MiMoVLProcessor(tokenizer, image_processor(**SMALL), video_min_pixels=SMALL["min_pixels"],
                           video_max_pixels=SMALL["max_pixels"])
    chat = [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "a.png")},
                                         {"type": "video", "video": list(random_video(4, 56, 56))},
                                         {"type": "text", "text": "What happens?"}]}]
    out = proc.apply_chat_template(chat, tokenize=True)
    ids = out["input_ids"]
    assert int((ids == proc.image_token_id).sum()) == int(out["image_grid_thw"].prod()) // 4
    assert int((ids == proc.video_token_id).sum()) == int(out["video_grid_thw"].prod()) // 4
    assert torch.equal(out["mm_token_type_ids"] == 2, ids == proc.video_token_id)
    assert proc.batch_decode(ids)[0].endswith("What happens?\nassistant\n")  # specials dropped


def test_thinking_switch_styles(tokenizer):
    proc = MiMoVLProcessor(tokenizer)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count them."}]}]
    on = proc.apply_chat_template(chat)
    prefill = proc.apply_chat_template(chat, enable_thinking=False)
    suffix = proc.apply_chat_template(chat, enable_thinking=False, no_think_style="suffix")
    tag = proc.apply_chat_template(chat, enable_thinking=False, no_think_style="tag")
    assert on.endswith("<|im_start|>assistant\n") and prefill == on + "<think>\n\n</think>\n\n"
    assert "Count them. /no_think<|im_end|>" in suffix and suffix.endswith("</think>\n\n")
    assert "Count them.\n<no_think><|im_end|>" in tag
    assert chat[0]["content"][1]["text"] == "Count them."  # the caller's messages are not modified
    assert proc.apply_chat_template([chat, chat]) == [on, on]


@pytest.mark.parametrize("text,expected", [
    ("<think>\nstep 1\n</think>\n\n42", ("step 1", "42")),
    ("42", ("", "42")),
    ("<think>\nstill thinking", ("still thinking", "")),
    ("<think>\n\n</think>\n\nfast", ("", "fast")),
    ("reasoned after a pre-filled tag</think>\n\nyes", ("reasoned after a pre-filled tag", "yes")),
    ("<think>a</think>b<think>c</think>d", ("a", "b<think>c</think>d")),
])
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


def test_processor_output_runs_both_models_alike(tokenizer, tmp_path):
    """Processor -> transformers' Qwen2.5-VL and mimolab on the same weights: same logits."""
    import copy

    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from mimolab import MiMoVL, MiMoVLConfig

    cfg = MiMoVLConfig.from_name("smoke")
    torch.manual_seed(0)
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(cfg.to_hf_dict()))).eval()
    hf.save_pretrained(tmp_path)
    ours = MiMoVL.from_pretrained(tmp_path)
    proc = MiMoVLProcessor(tokenizer, image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 30),
                           video_min_pixels=28 * 28 * 4, video_max_pixels=28 * 28 * 16)
    # (a 2-temporal-patch video whose spatial extent exceeds its temporal one: see positions.py on
    # transformers 5's different restart after long videos)
    chats = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Count the circles."}]}],
             [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When does it move?"}]}]]
    batch = proc(proc.apply_chat_template(chats), images=[random_image(120, 90)], videos=[random_video(4, 56, 84)])
    with torch.no_grad():
        ref = hf(**batch).logits
        got = ours(**{k: v for k, v in batch.items() if k != "mm_token_type_ids"}).logits
    real = batch["attention_mask"].bool()
    assert (got - ref)[real].abs().max() < 1e-4
