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
# # 01 · The synthetic visual world and the data pipeline
#
# MiMo-VL was pre-trained on captions, interleaved pages, OCR, grounding, video, GUI screens and
# synthetic long chain-of-thought reasoning. No data set can be downloaded here, and a laptop needs
# data a small model can learn from in minutes, so mimolab renders a procedural world that stands
# in for each data type. Every sample is a pure function of (task, index, seed, difficulty) and
# carries the reference its reward needs. This notebook shows every data type, the token budget
# each costs, what packing saves over padding, the token-share mixture, and how to bring your own
# JSONL.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # where outputs go; None: <runs root>/01_synthetic_world-<profile>

# %%
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mimolab import MiMoVLConfig
from mimolab.data.mixture import MixtureSampler
from mimolab.data.packing import PackingStats, pack
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.data.schema import write_jsonl
from mimolab.data.sources import jsonl_source
from mimolab.data.tokenize import record_tokenizer
from mimolab.data.world import TASKS, generate
from mimolab.settings import get_profile, runs_root

profile = profile or get_profile("cpu")
n_per_task = {"smoke": 4, "cpu": 40, "gpu": 200}[profile]
run_dir = Path(run_dir) if run_dir else runs_root() / f"01_synthetic_world-{profile}"
run_dir.mkdir(parents=True, exist_ok=True)
config = MiMoVLConfig.from_name(profile)
print(f"profile {profile}: {len(TASKS)} tasks, {n_per_task} samples each; outputs in {run_dir}")

# %% [markdown]
# ## 1. A gallery of every data type

# %%
samples = {task: generate(task, 0) for task in TASKS}
fig, axes = plt.subplots(2, (len(TASKS) + 1) // 2, figsize=(3 * ((len(TASKS) + 1) // 2), 6.5))
for ax, (task, sample) in zip(axes.flat, samples.items()):
    picture = (sample.images or [video[0] for video in sample.videos] or [None])[0]
    if picture is not None:
        ax.imshow(picture)
    else:  # text-only tasks: show the prompt
        ax.text(0.05, 0.5, textwrap.fill(sample.prompt, 28), fontsize=8, va="center")
    ax.set_title(task, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
for ax in list(axes.flat)[len(TASKS):]:
    ax.axis("off")
plt.tight_layout()
plt.savefig(run_dir / "gallery.png", dpi=110)

# %%
rows = []
for task, sample in samples.items():
    rows.append({"task": task, "question": sample.prompt.replace("\n", " ")[:80], "answer": sample.reply[-80:], "reference": json.dumps(sample.answer)[:60]})
pd.set_option("display.max_colwidth", 90)
pd.DataFrame(rows).set_index("task")

# %% [markdown]
# ### Difficulty: one knob per task
# `difficulty` in [0, 1] raises what each module's docstring lists (more objects and distractors, larger
# canvases, longer problems); below 0.25 a share of OCR, grounding, chart and reasoning samples are warm-ups.
# It is one number or a mapping per task: the cpu profile trains and evaluates most tasks at 0 and the three
# that would saturate there (grounding, counting, visual_math) a little harder. The same index at four
# difficulties:

# %%
from mimolab.train.stage import load_stage

print("cpu profile, stage 3 difficulty:", load_stage("stage3_multimodal", "cpu").difficulty)
levels, shown = (0.0, 0.1, 0.5, 1.0), ("grounding", "counting", "chart", "ocr")
fig, axes = plt.subplots(len(shown), len(levels), figsize=(2.4 * len(levels), 2.4 * len(shown)))
for row, task in zip(axes, shown):
    for ax, level in zip(row, levels):
        sample = generate(task, 3, difficulty=level)
        ax.imshow(sample.images[0])
        ax.set_title(f"{task} @ {level}\n{textwrap.shorten(sample.prompt, 34)}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
plt.tight_layout()
plt.savefig(run_dir / "difficulty.png", dpi=110)

# %% [markdown]
# ## 2. What each data type costs in tokens
# The world's own tokenizer (a 2,048-token byte-level BPE with Qwen2.5-VL's special tokens at
# fixed ids) is trained on the world's text. Images stay at native resolution: a 112 px square is
# 16 tokens after the 2×2 merge, 224 px is 64.

# %%
tokenizer = world_tokenizer(n_per_task=min(n_per_task, 20))
processor = world_processor(tokenizer)
tokenize = record_tokenizer(processor, config, max_length=4096)
lengths = pd.DataFrame([
    {"task": task, "tokens": len(sample), "image tokens": sample.input_ids.count(config.image_token_id)
     + sample.input_ids.count(config.video_token_id)}
    for task in TASKS for sample in (tokenize(generate(task, i), task) for i in range(n_per_task))
])
plt.figure(figsize=(10, 3.5))
sns.boxplot(data=lengths, x="task", y="tokens")
plt.xticks(rotation=30)
plt.title("tokens per sample")
plt.tight_layout()
plt.savefig(run_dir / "token_lengths.png", dpi=110)
lengths.groupby("task").mean().round(1).T

# %% [markdown]
# ## 3. Packing versus padding
# Samples are packed into rows of a fixed token budget; each keeps its own 3D positions and
# `cu_seqlens` keeps attention inside it. Padding every sample to the longest in its batch
# wastes the difference.

# %%
budget = 1024
stream = world_mixture({task: 1.0 for task in TASKS}, processor, config, max_length=budget)
stats = PackingStats()
packed_rows = list(pack((s for _, s in zip(range(len(TASKS) * n_per_task // 2), stream)), budget,
                        config.pad_token_id, stats=stats))
naive = stats.tokens / stats.naive_padded_tokens
pd.DataFrame({"packed rows": [stats.rows], "samples": [stats.samples], "packing efficiency": [round(stats.efficiency, 3)],
              "padding efficiency (same rows)": [round(naive, 3)], "skipped (too long)": [stats.skipped_too_long]})

# %% [markdown]
# ## 4. A mixture by token share, resumable
# The stage recipes set token shares per data type; the sampler always takes the data type that is
# furthest below its share, so the realised shares track the targets with no sampling noise, and
# its state (records consumed and tokens contributed per type) is all a restarted job needs.

# %%
targets = {"caption": 0.4, "ocr": 0.2, "grounding": 0.2, "visual_math": 0.2}
mixture = world_mixture(targets, processor, config, max_length=budget)
_ = [s for _, s in zip(range(8 * n_per_task // 4 + 8), mixture)]
shares = pd.DataFrame({"target": pd.Series(targets), "realised": pd.Series(mixture.token_shares())})
shares.plot.bar(figsize=(6, 3), rot=0, title="token share per data type")
plt.tight_layout()
print("sampler state:", mixture.state_dict())

# %% [markdown]
# ## 5. Bring your own JSONL
# Point the pipeline at a JSONL file of chat records (the Qwen-VL / LLaVA conversation style) and
# a folder of images; the world writes the same format. Bad records are skipped, counted by
# reason and logged; a run never stops for one.

# %%
data_dir = run_dir / "my_data"
write_jsonl([generate("counting", i) for i in range(4)], data_dir, "counting")
with open(data_dir / "counting.jsonl", "a") as f:
    f.write("{this line is not JSON\n")
print((data_dir / "counting.jsonl").read_text().splitlines()[0][:300], "...")
mine = MixtureSampler({"mine": jsonl_source(data_dir / "counting.jsonl")}, {"mine": 1.0}, tokenize)
print(f"{len(list(mine))} samples tokenised; {mine.skips.summary()}")
