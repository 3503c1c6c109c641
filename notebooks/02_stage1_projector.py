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
# # 02 · Stage 1: projector warm-up
#
# MiMo-VL joins two pre-trained networks: Qwen2.5-ViT, which turns an image into patch features,
# and MiMo-7B-Base, a language model. They have never seen each other. Stage 1 trains only the
# **projector** (the 2×2 patch merger + MLP between them) on image-caption pairs, so that image
# features land where the language model can read them, while both big networks stay frozen
# (report, sec. 2: 300B tokens at 8K, lr 1e-3).
#
# The small profiles have neither network pre-trained, so the pipeline first runs two **stage 0**s,
# which the 7B profile skips: the language model alone on the world's text (standing in for
# MiMo-7B-Base), then the ViT alone on the world's scene labels (standing in for Qwen2.5-ViT: for every
# token it learns the colour, shape and size of what covers it, through linear heads thrown away
# afterwards). Without that warm-up the ViT starts stage 1 from random weights, and the small models
# learned to read their images far more slowly (see `experiments/pretrain/stage0_vision.yaml`).
#
# Everything here is one call into the library (`mimolab.train.pretrain.run_stage`); the stage
# itself is the YAML file `experiments/pretrain/stage1_projector.yaml`.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"

# %%
import matplotlib.pyplot as plt
import pandas as pd

from mimolab import MiMoVL
from mimolab.eval.harness import examples
from mimolab.model.summary import weight_changes
from mimolab.pipeline import default_run_dir, get_processor, run_stage
from mimolab.settings import get_profile
from mimolab.train.stage import load_stage
from mimolab.viz import LiveLoss, plot_scores, show_examples

profile = profile or get_profile("cpu")
run_dir = default_run_dir(profile)
eval_n = {"smoke": 4, "cpu": 40, "gpu": 100}[profile]
print(f"profile {profile}; run directory {run_dir}")

# %% [markdown]
# ## 1. The two stages as configuration
# A part missing from `lr` is frozen: no gradient, no optimizer state, bit-identical weights.

# %%
stages = {name: load_stage(name, profile) for name in ("stage0_llm", "stage0_vision", "stage1_projector")}
pd.DataFrame({name: {"what": s.what, "trains (lr)": s.lr, "data (token shares)": s.shares, "steps": s.steps,
                     "tokens per step": s.tokens_per_step, "starts from": s.init_from or "random weights"}
              for name, s in stages.items()})

# %% [markdown]
# ## 2. Stage 0: the language model alone
# Re-running a finished stage returns its checkpoint; a stage killed half-way resumes from its
# last checkpoint.

# %%
live0 = LiveLoss("stage 0: language model on text")
stage0 = run_stage("stage0_llm", profile, run_dir, log=live0, eval_n=eval_n)
pd.DataFrame(stage0.eval)

# %% [markdown]
# ## 3. Stage 0, vision: the ViT alone
# Held-out scenes: how often the heads name the colour, shape and size of the object on a token that
# shows one (chance: the most common class).

# %%
live0v = LiveLoss("stage 0: ViT on scene labels")
stage0v = run_stage("stage0_vision", profile, run_dir, log=live0v, eval_n=eval_n)
pd.DataFrame(stage0v.eval)

# %% [markdown]
# ## 4. Stage 1: only the projector trains

# %%
live1 = LiveLoss("stage 1: projector on captions")
stage1 = run_stage("stage1_projector", profile, run_dir, log=live1, eval_n=eval_n)
fig = live1.figure() if live1.records else None

# %% [markdown]
# ## 5. Frozen means frozen
# The checkpoints before and after stage 1, compared tensor by tensor.

# %%
before, after = MiMoVL.from_pretrained(stage0v.final), MiMoVL.from_pretrained(stage1.final)
pd.DataFrame(weight_changes(before, after)).set_index("part")

# %% [markdown]
# ## 6. What the model can say about an image now
# Captions of held-out images, scored by the F1 of the objects they name; chance is measured by
# scoring the best single reference against every image. The language model is still the text-only one
# of stage 0, so the projector must write into inputs it was never trained to read: expect captions
# whose form is right and whose content is partly right at best.

# %%
plot_scores(stage1.eval, title="after stage 1")
pd.DataFrame(stage1.eval)

# %%
show_examples(examples(after, get_processor(run_dir), "caption", n=4));
