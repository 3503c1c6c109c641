"""A tiny checkpoint that has learnt one answer: asked about one image, it replies with a known box.
The demo's tests use it so that the model, not a stub, writes the answer the overlay draws."""

from pathlib import Path

import torch

from mimolab import MiMoVL
from mimolab.data.packing import collate_packed
from mimolab.data.pipeline import world_processor, world_tokenizer
from mimolab.data.tokenize import IGNORE_INDEX, make_sample, templated_sample
from mimolab.train.checkpoints import save_final

QUESTION = "Locate the red circle and output its bbox coordinates in JSON format."
BOX = [28, 56, 84, 112]  # in the pixels of the image as the processor resizes it
REPLY = f'[{{"bbox_2d": {BOX}, "label": "red circle"}}]'


def box_checkpoint(path: Path, image, max_steps: int = 600) -> Path:
    """Train the smoke preset until its greedy no-think answer to QUESTION about ``image`` is REPLY
    (checked teacher-forced: every reply token the argmax), so float differences between machines
    cannot leave a half-learned reply."""
    processor = world_processor(world_tokenizer(n_per_task=3))
    torch.manual_seed(0)
    model = MiMoVL.from_preset("smoke")
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, enable_thinking=False)
    full = templated_sample(processor, model.config, prompt + REPLY + "<|im_end|>", [image], [], "grounding")
    prompt_ids = templated_sample(processor, model.config, prompt, [image], [], "grounding").input_ids
    n_prompt = len(prompt_ids)
    assert full.input_ids[:n_prompt] == prompt_ids
    labels = [IGNORE_INDEX] * n_prompt + full.input_ids[n_prompt:]
    vis = {"pixel_values": full.pixel_values, "image_grid_thw": torch.tensor(full.image_grid_thw)}
    sample = make_sample(full.input_ids, labels, vis, model.config, "grounding")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    inputs = collate_packed([sample], len(sample), model.config.pad_token_id).model_inputs()
    targets = torch.tensor(labels[1:])
    learned = targets != IGNORE_INDEX
    model.train()
    for step in range(max_steps):
        out = model(**inputs)
        if step % 20 == 0 and bool((out.logits[0, :-1].argmax(-1)[learned] == targets[learned]).all()):
            break
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        raise AssertionError(f"the smoke model did not learn REPLY in {max_steps} steps")
    return save_final(model.eval(), processor, path)
