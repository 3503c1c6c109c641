"""Does a checkpoint use its images? Two measurements behind the closing notes of issue 4:

1. held-out scores with the real images and with every image replaced by a blank one of the same
   size (a model that ignores the image scores the same on both);
2. a ridge probe on the vision features (mean and max over the merged tokens of each image): how
   well colour and count can be read from them linearly (300 counting images to fit, 100 to test);
3. where an object is: whether the vision features say which quadrant of a grounding warm-up image
   holds the object (pooled features), or which of the 16 merged tokens a feature belongs to (each
   token's own feature), and how finely the language model's M-RoPE can tell image rows and columns
   apart (the fastest rotation, in radians per position, that each of its t/h/w sections gets);
4. whether the count reaches the answer: on counting questions (difficulty 0, no-think prompt), how well a
   ridge probe reads the count from the language model's state at the last prompt position after each layer,
   how far apart the two counts' mean states are against their spread along that line (the final state), and
   how often the model's own logits put the right count above the other.

    python benchmarks/probe_image_use.py runs/cpu/pretrain/stage4_long_context/final --tasks counting,gui,chart,caption
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from PIL import Image

from mimolab import MiMoVL
from mimolab.data.world import generate
from mimolab.data.world.scene import COLORS
from mimolab.eval.harness import held_out, score_samples
from mimolab.processing import MiMoVLProcessor


def blanked(sample):
    """The sample with every image replaced by a white one of the same size."""
    def blank(item):
        return {**item, "image": Image.new("RGB", item["image"].size, (255, 255, 255))} if item.get("type") == "image" else item
    messages = [{**m, "content": [blank(i) for i in m["content"]]} if isinstance(m["content"], list) else m
                for m in sample.messages]
    return dataclasses.replace(sample, messages=messages)


def ridge_accuracy(x: torch.Tensor, y: torch.Tensor, n_fit: int, lam: float = 10.0) -> float:
    """Test accuracy of a one-hot ridge regression fitted on the first ``n_fit`` rows, standardised."""
    x = (x - x[:n_fit].mean(0)) / (x[:n_fit].std(0) + 1e-6)
    onehot = torch.nn.functional.one_hot(y).float()
    w = torch.linalg.solve(x[:n_fit].T @ x[:n_fit] + lam * torch.eye(x.shape[1]), x[:n_fit].T @ onehot[:n_fit])
    return float(((x[n_fit:] @ w).argmax(1) == y[n_fit:]).float().mean())


@torch.no_grad()
def vision_features(model, processor, samples: list) -> list[torch.Tensor]:
    """Each sample's merged vision tokens (projector outputs), one (tokens, hidden) tensor per image."""
    out = []
    for s in samples:
        inputs = processor.image_processor(images=s.images, return_tensors="pt")
        out.append(model.visual(inputs["pixel_values"], inputs["image_grid_thw"]))
    return out


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Mean and max over an image's tokens: what the linear probes read."""
    return torch.cat([features.mean(0), features.max(0).values])


@torch.no_grad()
def probe_accuracy(model, processor, difficulty: float) -> dict[str, float]:
    samples = [generate("counting", i, difficulty=difficulty) for i in range(400)]
    x = torch.stack([pooled(f) for f in vision_features(model, processor, samples)])
    targets = {"count": torch.tensor([s.answer["count"] for s in samples]),
               "colour": torch.tensor([list(COLORS).index(s.meta["color"]) for s in samples])}
    return {name: ridge_accuracy(x, y, 300) for name, y in targets.items()}


@torch.no_grad()
def position_probe(model, processor) -> dict[str, float]:
    """Whether the vision features carry where things are (grounding warm-ups at difficulty 0: one large
    object in one quadrant of a 112-pixel image, 4x4 merged tokens; chance 0.25 and 0.0625)."""
    samples = [generate("grounding", i, difficulty=0.0) for i in range(400)]
    tokens = vision_features(model, processor, samples)
    quadrant = [int(s.answer["bbox_2d"][0] >= 56) + 2 * int(s.answer["bbox_2d"][1] >= 56) for s in samples]
    per_token = torch.cat(tokens[:200])
    index = torch.arange(tokens[0].shape[0]).repeat(200)
    return {"quadrant_from_pooled": ridge_accuracy(torch.stack([pooled(f) for f in tokens]), torch.tensor(quadrant), 300),
            "token_index_from_own_feature": ridge_accuracy(per_token, index, 150 * tokens[0].shape[0])}


@torch.no_grad()
def count_at_answer(model, processor, n: int = 400) -> dict:
    """Count decodability at the answer position, layer by layer (see the module docstring, item 4)."""
    states, counts, own = [], [], []
    taken: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, out: taken.append(out[0, -1]))
             for layer in model.language_model.layers]
    digits = [processor.tokenizer.convert_tokens_to_ids(str(k)) for k in (1, 2)]
    try:
        for s in held_out("counting", n, difficulty=0.0):
            prompt = processor.apply_chat_template([m for m in s.messages if m["role"] == "user"], enable_thinking=False)
            inputs = {k: v for k, v in processor([prompt], images=s.images).items() if k != "mm_token_type_ids"}
            taken.clear()
            out = model(**inputs)
            states.append(torch.stack(taken + [out.hidden_states[0, -1]]))
            counts.append(s.answer["count"] - 1)
            own.append(int(out.logits[0, -1, digits].argmax()))
    finally:
        for h in hooks:
            h.remove()
    x, y = torch.stack(states), torch.tensor(counts)
    final = x[:, -1]
    gap = final[y == 1].mean(0) - final[y == 0].mean(0)
    along = final @ (gap / gap.norm())
    spread = torch.cat([along[y == k] - along[y == k].mean() for k in (0, 1)]).std()
    return {"ridge_by_layer": [round(ridge_accuracy(x[:, l], y, 3 * n // 4), 3) for l in range(x.shape[1])],
            "mean_gap_over_spread": round(float(gap.norm() / spread), 3),
            "model_picks_right_count": round(float((torch.tensor(own) == y).float().mean()), 3)}


def mrope_resolution(config) -> dict[str, float]:
    """The fastest rotation (radians per position step) among each M-RoPE section's frequencies:
    sections take the frequencies in order t, h, w, so w gets the slowest."""
    text = config.text
    inv_freq = 1.0 / (text.rope_theta ** (torch.arange(0, text.head_dim, 2).float() / text.head_dim))
    starts = [0, text.mrope_section[0], text.mrope_section[0] + text.mrope_section[1]]
    return {axis: float(inv_freq[start]) for axis, start in zip("thw", starts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--tasks", default="counting,gui,chart,caption")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--difficulty", type=float, default=0.0)
    args = parser.parse_args()
    model, processor = MiMoVL.from_pretrained(args.checkpoint).eval(), MiMoVLProcessor.from_pretrained(args.checkpoint)
    print("| task | real images | blank images | chance |\n|---|---|---|---|")
    for task in args.tasks.split(","):
        samples = held_out(task, args.n, difficulty=args.difficulty)
        real = score_samples(model, processor, task, samples)
        blank = score_samples(model, processor, task, [blanked(s) for s in samples])
        print(f"| {task} | {real.score:.2f} | {blank.score:.2f} | {real.chance:.2f} |")
    print("linear probe on the vision features (test accuracy):", probe_accuracy(model, processor, args.difficulty))
    print("position in the vision features (test accuracy):", position_probe(model, processor))
    print("M-RoPE: fastest rotation per position step, by section:", mrope_resolution(model.config))
    print("count at the answer position (ridge probe after each layer, then after the final norm):",
          count_at_answer(model, processor))


if __name__ == "__main__":
    main()
