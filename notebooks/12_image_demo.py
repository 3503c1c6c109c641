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
# # 12 · Ask the model about an image
#
# Pick an image from `data_samples/` or upload your own, type a question and press **Ask**. The
# answer streams in as the model writes it; with **thinking** on, the part inside
# `<think>…</think>` is shown apart from the final answer (off sends MiMo-VL's `/no_think`
# switch: an empty think block). Boxes and points in the answer (Qwen2.5-VL's JSON `bbox_2d`,
# its `(x1,y1),(x2,y2)` box text, GUI `click(x, y)`) are drawn over the image, scaled from the
# pixels of the image as the processor resized it, which is the frame the model answers in.
#
# The checkpoint is the newest one the pipeline wrote (`make pipeline`), or any directory you type:
# a real MiMo-VL-7B or Qwen2.5-VL checkpoint loads the same way. The app is `mimolab.demo.ImageDemo`.

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
checkpoint = None  # a checkpoint directory; None: $MIMOLAB_DEMO_CHECKPOINT or the newest under runs/<profile>/

# %%
import os

from mimolab.demo import ImageDemo, latest_checkpoint
from mimolab.pipeline import default_run_dir, run_pipeline
from mimolab.settings import get_profile

profile = profile or get_profile("cpu")
runs = default_run_dir(profile).parent
checkpoint = checkpoint or os.environ.get("MIMOLAB_DEMO_CHECKPOINT") or latest_checkpoint(runs)
if checkpoint is None:  # nothing trained yet: the pipeline at this profile (smoke: a minute; cpu: the main job)
    print(f"no checkpoint under {runs}: running the {profile} pipeline first")
    run_pipeline(profile, default_run_dir(profile), eval_n=4)
    checkpoint = latest_checkpoint(runs)
print("checkpoint:", checkpoint)

# %%
demo = ImageDemo(checkpoint)
demo.load()
demo
