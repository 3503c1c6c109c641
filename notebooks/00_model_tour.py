# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · A tour of the MiMo-VL model
#
# MiMo-VL-7B is a **ViT → MLP → LLM** vision-language model: Qwen2.5-ViT encodes images and videos
# at their native resolution, a 2×2 patch merger projects them into the language model's space,
# and MiMo-7B (a Qwen2-style decoder with 3D rotary positions) reads them as tokens.
# This notebook builds the model at the selected profile, shows its parameter table next to the
# released 7B architecture, writes and re-reads a real checkpoint directory, sends one image
# through the processor and the model, plots the 3D positions, and generates.
#
# The profile is set by the `profile` parameter (papermill) or `MIMOLAB_PROFILE`; `smoke` runs
# in seconds (CI), `cpu` is the laptop default.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # where outputs go; None: <runs root>/00_model_tour-<profile>

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from PIL import Image, ImageDraw

from mimolab import MiMoVL, MiMoVLConfig, parameter_table
from mimolab.model.generation import generate, stream
from mimolab.processing import MiMoVLProcessor, image_processor, split_thinking
from mimolab.settings import get_profile, runs_root
from mimolab.tokenizer import train_synthetic_tokenizer

profile = profile or get_profile("cpu")
run_dir = Path(run_dir) if run_dir else runs_root() / f"00_model_tour-{profile}"
run_dir.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
print(f"profile: {profile}; outputs in {run_dir}")

# %% [markdown]
# ## 1. The architecture, component by component
# The parameter table is computed on PyTorch's meta device, so the 7B model costs no memory.

# %%
config = MiMoVLConfig.from_name(profile)
table = pd.DataFrame(
    {name: dict(parameter_table(MiMoVLConfig.from_name(name))) for name in (profile, "mimo-vl-7b")}
).fillna(0).astype(int)
table.style.format("{:,}")

# %%
ax = table.drop(index="total").plot.barh(logx=True, figsize=(8, 3.5))
ax.set_xlabel("parameters (log scale)")
ax.set_title("Where the parameters are")
plt.tight_layout()
plt.savefig(run_dir / "parameters.png", dpi=120)

# %%
pd.DataFrame({
    "vision encoder": [f"depth {config.vision.depth}, width {config.vision.hidden_size}, {config.vision.num_heads} heads, "
                       f"window {config.vision.window_size}px, full attention in blocks {list(config.vision.fullatt_block_indexes)}"],
    "projector": [f"{config.projector_type}: 4 x {config.vision.hidden_size} -> {config.vision.out_hidden_size}"],
    "language model": [f"{config.text.num_hidden_layers} layers, width {config.text.hidden_size}, {config.text.num_attention_heads} "
                       f"query / {config.text.num_key_value_heads} key-value heads, M-RoPE sections {list(config.text.mrope_section)}"],
}, index=[profile]).T

# %% [markdown]
# ## 2. A real checkpoint directory
# `save_pretrained` writes the layout MiMo-VL is released in (config.json with text and vision
# sub-configs, safetensors); transformers' `Qwen2_5_VLForConditionalGeneration` loads it.

# %%
model = MiMoVL(config).eval()
model.save_pretrained(run_dir / "checkpoint")
for f in sorted((run_dir / "checkpoint").iterdir()):
    print(f"{f.name:32s} {f.stat().st_size / 1e6:8.2f} MB")
saved = json.loads((run_dir / "checkpoint" / "config.json").read_text())
print(json.dumps({k: saved[k] for k in ("model_type", "image_token_id", "video_token_id")}, indent=1))
print("vision_config:", {k: saved["vision_config"][k] for k in ("depth", "hidden_size", "window_size", "fullatt_block_indexes")})

# %% [markdown]
# ## 3. One image through the processor and the model
# The image is resized to multiples of 28 pixels (a 14-pixel patch, merged 2×2), so every 28×28
# square becomes one token. The chat template puts one `<|image_pad|>` where the image goes; the
# processor expands it to one placeholder per merged patch.

# %%
image = Image.new("RGB", (196, 140), "white")
draw = ImageDraw.Draw(image)
draw.ellipse((20, 20, 70, 70), fill="red")
draw.rectangle((110, 60, 170, 120), fill="blue")
draw.polygon([(80, 130), (105, 85), (130, 130)], fill="green")

tokenizer = train_synthetic_tokenizer()
processor = MiMoVLProcessor(tokenizer, image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64))
chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many shapes are there?"}]}]
prompt = processor.apply_chat_template(chat)
inputs = processor(prompt, images=[image])
print(prompt)
grid = inputs["image_grid_thw"][0].tolist()
n_pad = int((inputs["input_ids"] == config.image_token_id).sum())
print(f"grid (t, h, w) = {grid} patches of 14 px -> {grid[0] * grid[1] * grid[2]} patches -> {n_pad} image tokens after the 2x2 merge")
print(f"pixel_values {tuple(inputs['pixel_values'].shape)}, input_ids {tuple(inputs['input_ids'].shape)}")

# %%
fig, ax = plt.subplots(figsize=(4, 3))
ax.imshow(image.resize((grid[2] * 14, grid[1] * 14)))
for x in range(0, grid[2] * 14 + 1, 28):
    ax.axvline(x - 0.5, color="k", lw=0.5)
for y in range(0, grid[1] * 14 + 1, 28):
    ax.axhline(y - 0.5, color="k", lw=0.5)
ax.set_title("one token per 28x28 square")
ax.axis("off")
plt.savefig(run_dir / "image_tokens.png", dpi=120)

# %% [markdown]
# ## 4. 3D positions
# Text tokens carry the same position on all three axes; image tokens share one temporal
# position and spread over height and width; the text after the image resumes after the image's
# largest position. (Videos add temporal positions at `tokens_per_second` per second.)

# %%
positions, deltas = model.rope_index(inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"])
fig, ax = plt.subplots(figsize=(9, 3))
for axis, name in enumerate(("temporal", "height", "width")):
    ax.plot(positions[axis, 0].numpy(), label=name, lw=1.5 - 0.4 * axis)
is_image = (inputs["input_ids"][0] == config.image_token_id).numpy()
ax.fill_between(range(len(is_image)), 0, positions.max().item(), where=is_image, alpha=0.1, label="image tokens")
ax.set_xlabel("token index")
ax.set_ylabel("position id")
ax.legend()
plt.tight_layout()
plt.savefig(run_dir / "positions.png", dpi=120)

# %% [markdown]
# ## 5. A forward pass and generation
# The model is untrained, so the text it writes is noise; what matters here is the machinery:
# a KV-cache generator that returns token ids, their log-probabilities (what on-policy RL needs)
# and why each row stopped, and streams text for the demo.

# %%
with torch.no_grad():
    out = model(**{k: v for k, v in inputs.items() if k != "mm_token_type_ids"}, labels=inputs["input_ids"])
print(f"logits {tuple(out.logits.shape)}; loss {out.loss.item():.3f} (an untrained model: about ln(vocab) = "
      f"{torch.log(torch.tensor(float(config.text.vocab_size))).item():.3f})")

# %%
result = generate(model, inputs["input_ids"], inputs["attention_mask"], tokenizer=tokenizer, max_new_tokens=16,
                  pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                  do_sample=True, temperature=1.0, seed=0)
print("finish reason:", result.finish_reasons[0])
print("text:", repr(result.texts[0]))
print("log-probs:", [round(x, 2) for x in result.logprobs[0][:8]], "...")
thinking, answer = split_thinking(result.texts[0])
print("thinking part:", repr(thinking[:40]), "| answer part:", repr(answer[:40]))

# %%
pieces = list(stream(model, inputs["input_ids"], tokenizer=tokenizer, max_new_tokens=8,
                     pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"]))
print(f"streamed {len(pieces)} pieces:", pieces)

# %% [markdown]
# ## Next
# Notebook 01 builds the synthetic visual world the small profiles learn from; 02-05 train the
# four pre-training stages on it.
