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
#
# %% [markdown]
# # 04 · Stage 3: general multimodal pre-training
#
# Everything trains, on every data type: captions, interleaved pages, OCR, grounding, counting,
# charts and tables, GUI screens, video, and a small share of synthetic reasoning and plain text
# (report, sec. 2: 1.4T tokens at 8K, lr 1e-5 at 7B). This is where the perception skills the
# RL stage later sharpens (grounding, counting, temporal video grounding, GUI actions) are learned.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"

# %%
import pandas as pd

from mimolab import MiMoVL
from mimolab.eval.harness import examples
from mimolab.pipeline import default_run_dir, get_processor, run_stage
from mimolab.pipeline.report import task_loss_figure
from mimolab.settings import get_profile
from mimolab.train.stage import load_stage
from mimolab.train.tracking import read_metrics
from mimolab.viz import LiveLoss, plot_scores, show_examples

profile = profile or get_profile("cpu")
run_dir = default_run_dir(profile)
eval_n = {"smoke": 4, "cpu": 40, "gpu": 100}[profile]
stage = load_stage("stage3_multimodal", profile)
pd.DataFrame({"token share": stage.shares}).T

# %% [markdown]
# ## 1. Train (earlier stages run first if this run directory lacks them)

# %%
live = LiveLoss("stage 3: everything, all data types")
stage3 = run_stage("stage3_multimodal", profile, run_dir, log=live, eval_n=eval_n)
fig = live.figure() if live.records else None

# %% [markdown]
# ## 2. Loss per data type
# Each task's loss over the steps it appeared in. Tasks whose answer is read off the image
# (counting, grounding, OCR) fall later and slower than those the text alone nearly determines.

# %%
task_loss_figure(read_metrics(run_dir / "stage3_multimodal", key="loss"), "stage 3: loss per data type")

# %% [markdown]
# ## 3. Perception on held-out images
# Each score sits beside its measured chance level; `z` is how many standard errors above it.

# %%
plot_scores(stage3.eval, title="after stage 3")
pd.DataFrame(stage3.eval)

# %%
model, processor = MiMoVL.from_pretrained(stage3.final), get_processor(run_dir)
show_examples(examples(model, processor, "grounding", n=2) + examples(model, processor, "counting", n=2)
              + examples(model, processor, "gui", n=1));
