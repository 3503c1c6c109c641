"""Bad input gets an error that names the problem."""

import pytest
import torch

from mimolab import MiMoVL
from model_helpers import PATCH_DIM, batch_of, tiny_config, without

CFG = tiny_config(text={"max_position_embeddings": 64})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MiMoVL(CFG).eval()


def test_placeholder_count_that_does_not_match_the_grid(model):
    batch = without(batch_of(CFG, [{"images": [[1, 4, 4]]}]), "mm_token_type_ids", "attention_mask")
    batch["image_grid_thw"] = torch.tensor([[1, 4, 8]])
    batch["pixel_values"] = torch.randn(32, PATCH_DIM)
    with pytest.raises(ValueError, match="placeholder"):
        model(**batch)


def test_pixel_values_of_the_wrong_shape(model):
    batch = without(batch_of(CFG, [{"images": [[1, 4, 4]]}]), "mm_token_type_ids")
    batch["pixel_values"] = batch["pixel_values"][:, :100]
    with pytest.raises(ValueError, match=r"pixel_values has shape \(16, 100\)"):
        model(**batch)


def test_placeholders_without_pixels_and_pixels_without_grid(model):
    batch = without(batch_of(CFG, [{"images": [[1, 4, 4]]}]), "mm_token_type_ids")
    with pytest.raises(ValueError, match="no image pixels"):
        model(**without(batch, "pixel_values", "image_grid_thw"))
    with pytest.raises(ValueError, match="without image_grid_thw"):
        model(**without(batch, "image_grid_thw"))


def test_images_given_but_no_placeholders(model):
    batch = without(batch_of(CFG, [{"n_text": 6}]), "mm_token_type_ids")
    batch.update(pixel_values=torch.randn(16, PATCH_DIM), image_grid_thw=torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="4 features.*0 placeholder tokens"):
        model(**batch)


def test_prompt_longer_than_the_context(model):
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_attention_mask_of_the_wrong_length(model):
    from mimolab.model.language import KVCache

    cache = KVCache.empty(CFG.text, 1, 16, torch.device("cpu"), torch.float32)
    model(torch.tensor([[1, 2, 3]]), cache=cache, position_ids=torch.arange(3).view(1, 1, 3).expand(3, 1, 3))
    with pytest.raises(ValueError, match="attention_mask covers 1 tokens, expected 4"):
        model(torch.tensor([[4]]), attention_mask=torch.ones(1, 1), cache=cache, position_ids=torch.full((3, 1, 1), 3))
    with pytest.raises(ValueError, match="position_ids are required"):
        model(torch.tensor([[4]]), cache=cache)


def test_grid_not_a_multiple_of_the_merge(model):
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        model.visual(torch.randn(15, PATCH_DIM), torch.tensor([[1, 3, 5]]))
