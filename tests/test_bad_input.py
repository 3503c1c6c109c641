"""Bad input gets an error that names the problem, before any silent misbehaviour."""

import pytest
import torch

from mimolab import MiMoVL
from mimolab.model.language import KVCache
from model_helpers import PATCH_DIM, build_batch, build_sample, model_inputs, tiny_config

CFG = tiny_config(text={"max_position_embeddings": 64})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiMoVL(CFG).eval()


def image_sample(images=([1, 4, 4],), **kw):
    return model_inputs(build_sample(CFG, images=[list(g) for g in images], **kw))


def test_placeholder_count_that_does_not_match_the_grid(model):
    s = image_sample()  # 4 placeholders for a 4x4 grid
    s.update(image_grid_thw=torch.tensor([[1, 4, 8]]), pixel_values=torch.randn(32, PATCH_DIM))
    with pytest.raises(ValueError, match=r"grids \[\[1, 4, 8\]\] give 8 features, the text has 4 placeholder tokens"):
        model(**s)


def test_video_placeholder_count_that_does_not_match_the_grid(model):
    s = model_inputs(build_sample(CFG, videos=[[2, 4, 4]]))  # 8 placeholders
    s.update(video_grid_thw=torch.tensor([[3, 4, 4]]), pixel_values_videos=torch.randn(48, PATCH_DIM))
    with pytest.raises(ValueError, match="video features and video tokens do not match.*12 features.*8 placeholder"):
        model(**s)


def test_placeholder_runs_that_do_not_match_the_grids_in_order(model):
    """Same total (4 + 8 placeholders, grids 8 + 4) but in the wrong order: the positions would be wrong."""
    s = image_sample(images=([1, 4, 4], [1, 4, 8]))
    s["image_grid_thw"] = torch.tensor([[1, 4, 8], [1, 4, 4]])
    message = r"image 0 of grid \[1, 4, 8\] needs 8 consecutive placeholder tokens; the text has 4"
    with pytest.raises(ValueError, match=message):
        model(**s)


def test_pixel_values_of_the_wrong_shape(model):
    s = image_sample()
    message = r"pixel_values has shape \(16, 100\) but the grids \[\[1, 4, 4\]\] need \(16, 1176\)"
    with pytest.raises(ValueError, match=message):
        model(**{**s, "pixel_values": s["pixel_values"][:, :100]})
    with pytest.raises(ValueError, match=r"pixel_values has shape \(15, 1176\)"):
        model(**{**s, "pixel_values": s["pixel_values"][:15]})
    with pytest.raises(ValueError, match=r"pixel_values has shape \(16, 3, 2, 14, 14\)"):
        model(**{**s, "pixel_values": s["pixel_values"].view(16, 3, 2, 14, 14)})


def test_placeholders_without_pixels_and_pixels_without_grid(model):
    s = image_sample()
    with pytest.raises(ValueError, match="the text has 4 image placeholder tokens but no image pixels"):
        model(**{k: v for k, v in s.items() if k not in ("pixel_values", "image_grid_thw")})
    with pytest.raises(ValueError, match="image pixels given without image_grid_thw"):
        model(**{k: v for k, v in s.items() if k != "image_grid_thw"})


def test_images_given_but_no_placeholders(model):
    s = model_inputs(build_sample(CFG, n_text=6))
    s.update(pixel_values=torch.randn(16, PATCH_DIM), image_grid_thw=torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="give 4 features, the text has 0 placeholder tokens"):
        model(**s)


def test_prompt_longer_than_the_context(model):
    message = r"sequence of 65 tokens is longer than the context \(max_position_embeddings = 64\)"
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 65, dtype=torch.long))
    model(torch.zeros(1, 64, dtype=torch.long))  # exactly the context is fine
    cache = KVCache.empty(CFG.text, 1, 80, torch.device("cpu"), torch.float32)
    model(torch.zeros(1, 60, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="sequence of 65 tokens is longer than the context"):  # 60 cached + 5 new
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache, position_ids=torch.full((3, 1, 5), 60))


def test_attention_mask_of_the_wrong_length(model):
    batch = model_inputs(build_batch(CFG, [{"n_text": 4}, {"n_text": 9}]))
    width = batch["input_ids"].shape[1]
    with pytest.raises(ValueError, match=f"attention_mask covers {width + 2} tokens, expected {width}"):
        model(**{**batch, "attention_mask": torch.ones(2, width + 2, dtype=torch.long)})
    with pytest.raises(ValueError, match=f"attention_mask covers {width - 1} tokens, expected {width}"):
        model(**{**batch, "attention_mask": batch["attention_mask"][:, 1:]})
    # with a KV cache the mask covers cached + new tokens
    cache = KVCache.empty(CFG.text, 1, 16, torch.device("cpu"), torch.float32)
    model(torch.tensor([[1, 2, 3]]), cache=cache, position_ids=torch.arange(3).view(1, 1, 3).expand(3, 1, 3))
    with pytest.raises(ValueError, match="attention_mask covers 1 tokens, expected 4"):
        model(torch.tensor([[4]]), attention_mask=torch.ones(1, 1), cache=cache, position_ids=torch.full((3, 1, 1), 3))
    with pytest.raises(ValueError, match="position_ids are required when decoding with a KV cache"):
        model(torch.tensor([[4]]), cache=cache)


def test_grid_not_a_multiple_of_the_merge(model):
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        model.visual(torch.randn(15, PATCH_DIM), torch.tensor([[1, 3, 5]]))
