# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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
# The small profiles have no MiMo-7B-Base to start from, so the pipeline first runs **stage 0**:
# the language model alone, on the world's text. It stands in for the base model and is the only
# stage the 7B profile skips. The ViT of the small profiles starts from random weights; stage 2
# is where it learns.
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
from mimolab.profiles import get_profile
from mimolab.train.pretrain import default_run_dir, get_processor, run_stage
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
stages = {name: load_stage(name, profile) for name in ("stage0_llm", "stage1_projector")}
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
# ## 3. Stage 1: only the projector trains

# %%
live1 = LiveLoss("stage 1: projector on captions")
stage1 = run_stage("stage1_projector", profile, run_dir, log=live1, eval_n=eval_n)
fig = live1.figure() if live1.records else None

# %% [markdown]
# ## 4. Frozen means frozen
# The checkpoints before and after stage 1, compared tensor by tensor.

# %%
before, after = MiMoVL.from_pretrained(stage0.final), MiMoVL.from_pretrained(stage1.final)
pd.DataFrame(weight_changes(before, after)).set_index("part")

# %% [markdown]
# ## 5. What the model can say about an image now
# Captions of held-out images, scored by the F1 of the objects they name; chance is measured by
# scoring each reference against another image's reference. With the ViT still random, the
# projector can only pass on what random features already carry: expect captions whose form is
# right and whose content is partly right at best.

# %%
plot_scores(stage1.eval, title="after stage 1")
pd.DataFrame(stage1.eval)

# %%
show_examples(examples(after, get_processor(run_dir), "caption", n=4));
