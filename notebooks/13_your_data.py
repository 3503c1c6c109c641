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
# # 13 · Your checkpoint, your data
#
# Everything so far trained on the synthetic world. This notebook starts from a checkpoint directory
# (the pipeline's stage-4 model here; a released MiMo-VL-7B or Qwen2.5-VL directory loads the same
# way, with its own tokenizer and chat template) and your files:
#
# 1. chat with it about an image, thinking on and off;
# 2. supervised fine-tuning on a JSONL of chats with images (`data_samples/your_data/chat.jsonl`), a
#    share held out to measure the loss before and after;
# 3. GRPO on a prompt file (`prompts.jsonl`) with MiMo-VL's verifiable rewards and a reward of your
#    own, which reads a column of the records by name, as TRL's rewards do;
# 4. the held-out records scored before and after, paired;
# 5. the demo on the result.
#
# The same steps run from a terminal: `mimolab sft`, `mimolab grpo` (and `mimolab pages` for PDFs);
# see the README's "Your checkpoint, your data".

# %% tags=["parameters"]
profile = None  # "smoke" | "cpu" | "gpu"; None: MIMOLAB_PROFILE or "cpu"
run_dir = None  # where this notebook writes; None: $MIMOLAB_RUNS/your_data-<profile>
checkpoint = None  # any Qwen2.5-VL-format directory; None: the pipeline's stage-4 checkpoint (trained if missing)

# %%
import json
from pathlib import Path

import pandas as pd
from PIL import Image

from mimolab.demo import ImageDemo, ask, load_checkpoint
from mimolab.eval.results import changes_table
from mimolab.pipeline import default_run_dir, run_stage
from mimolab.pipeline.grpo_files import run_grpo_files
from mimolab.pipeline.sft import run_sft
from mimolab.settings import REPO_ROOT, get_profile, runs_root
from mimolab.tokenizer import split_thinking
from mimolab.train.tracking import read_metrics

profile = profile or get_profile("cpu")
run_dir = Path(run_dir) if run_dir else runs_root() / f"your_data-{profile}"
data = REPO_ROOT / "data_samples" / "your_data"
# smoke: seconds, to show it runs; cpu: minutes on a laptop; gpu: the same recipe at length
sft_settings = {"smoke": dict(steps=4, lr=1e-3, row_tokens=512, rows_per_step=2),
                "cpu": dict(steps=20, lr=1e-4, row_tokens=1024, rows_per_step=2),
                "gpu": dict(steps=300, lr=5e-5, row_tokens=4096, rows_per_step=4)}[profile]
grpo_settings = {"smoke": dict(steps=2),
                 "cpu": dict(steps=20, prompts_per_step=16, max_new_tokens=64),
                 "gpu": dict(steps=100, prompts_per_step=32)}[profile]
checkpoint = checkpoint or run_stage("stage4_long_context", profile, default_run_dir(profile)).final
print("checkpoint:", checkpoint)

# %% [markdown]
# ## 1. Chat with the checkpoint
# `ask` streams a reply (greedy here). With thinking on, the reply opens with `<think>...</think>`;
# off, the prompt pre-fills an empty think block (MiMo-VL's switch), so the model answers at once.

# %%
model, processor = load_checkpoint(checkpoint)
first = json.loads((data / "prompts.jsonl").read_text().splitlines()[0])
image = Image.open(data / first["messages"][0]["content"][0]["image"])
question = first["messages"][0]["content"][1]["text"]
replies = {think: "".join(ask(model, processor, image, question, think=think, max_new_tokens=96))
           for think in (True, False)}
display(image.resize((image.width * 2, image.height * 2)))
pd.DataFrame([{"mode": "think" if t else "no_think", "thinking": split_thinking(r)[0], "answer": split_thinking(r)[1]}
              for t, r in replies.items()]).assign(question=question)

# %% [markdown]
# ## 2. Supervised fine-tuning on a JSONL
# The file is mimolab's chat schema (`mimolab/data/schema.py`): turns with images by relative path,
# a system turn or string content where you like, several turns. Loss falls on the assistant turns
# only; samples are packed into rows; a fifth of the records (spread over the file) never train and
# give the held-out loss before and after. Re-running the cell resumes (or returns) the run.

# %%
sft = run_sft(checkpoint, [str(data / "chat.jsonl")], run_dir / "sft", eval_split=0.25, checkpoint_every=20,
              progress=False, **sft_settings)
curve = pd.DataFrame(read_metrics(run_dir / "sft")).set_index("step")
curve["loss"].plot(title="SFT training loss", figsize=(7, 3))
pd.DataFrame(sft.heldout)

# %% [markdown]
# ## 3. GRPO on a prompt file, with a reward of your own
# Each prompt record holds the user turn and the columns its rewards need: `task` and `answer` for
# MiMo-VL's verifiable rewards, and here `max_words`, which the reward below asks for by name. A record
# whose task no reward scores, or which lacks a column a reward needs, would stop the run before it
# starts, naming the record and the column.

# %%
def brief(completions, max_words, **columns):
    """1 when the final answer has at most the record's max_words words; less the longer it runs."""
    lengths = [len(c.split("</think>")[-1].replace("<|im_end|>", "").split()) for c in completions]
    return [1.0 if n <= m else m / n for n, m in zip(lengths, max_words)]


grpo = run_grpo_files(sft.final, data / "prompts.jsonl", ["verifiable", brief], run_dir / "grpo", profile=profile,
                      eval_split=0.25, progress=False, **grpo_settings)
rewards = pd.DataFrame(read_metrics(run_dir / "grpo")).set_index("step")
rewards.filter(regex="^reward_component/").plot(title="GRPO reward per component", figsize=(7, 3))
rewards.reindex(columns=["reward", "groups_kept", "first_update/ratio_max_dev", "kl_ref", "response_length"]).tail()

# %% [markdown]
# ## 4. Before and after, on the held-out records
# The held-out prompts are answered greedily before GRPO and after it, and scored by the same rewards;
# each record is scored twice, so the change is judged on the paired differences (z = change / its
# standard error; below 2 in size it is not a change). Chance is the best single reference reply
# given to every record (0 here: the prompts carry no reply).

# %%
display(pd.DataFrame([{"file": row["file"], "held-out loss before": row["before"], "after": row["after"],
                       "change": row["change"], "s.e.": row["stderr"], "n": row["n"]} for row in sft.heldout]))
print(changes_table(grpo.morl.changes))

# %% [markdown]
# ## 5. The demo on the result
# The fine-tuned, RL-trained checkpoint in notebook 12's app: pick an image, ask, toggle thinking.

# %%
demo = ImageDemo(grpo.final)
demo.load()
demo
