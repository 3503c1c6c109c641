"""The synthetic world's pipeline end to end: tokenizer, processor, mixture, packing, model."""

import itertools

import pytest
import torch

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.config import special_token_ids
from mimolab.data.packing import PackingStats, pack
from mimolab.data.pipeline import world_mixture, world_processor, world_tokenizer
from mimolab.data.world import TASKS

CFG = MiMoVLConfig.from_name("smoke")


@pytest.fixture(scope="module")
def processor():
    return world_processor(world_tokenizer(n_per_task=5))


def test_world_tokenizer_has_fixed_special_ids_and_round_trips(processor):
    tok = processor.tokenizer
    assert {t: tok.convert_tokens_to_ids(t) for t in special_token_ids()} == special_token_ids()
    text = '<think>\nThere are 3 red shapes.\n3 * 4 = 12\n</think>\n\nThe answer is \\boxed{12}. [{"bbox_2d": [1, 2, 3, 4]}]'
    assert tok.decode(tok(text)["input_ids"]) == text


def test_every_task_tokenises_and_trains_in_a_packed_row(processor):
    stream = world_mixture({t: 1.0 for t in TASKS}, processor, CFG, max_length=1024)
    samples = list(itertools.islice(iter(stream), 2 * len(TASKS)))
    assert {s.task for s in samples} == set(TASKS)
    stats = PackingStats()
    rows = list(pack(samples, budget=1024, pad_id=CFG.pad_token_id, stats=stats))
    torch.manual_seed(0)
    model = MiMoVL(CFG)
    loss = model(**rows[0].model_inputs()).loss
    loss.backward()
    assert torch.isfinite(loss) and model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert stats.efficiency > stats.tokens / (stats.samples * 1024)


def test_world_stream_resumes_exactly(processor):
    def run(n, state=None):
        stream = world_mixture({"caption": 0.5, "counting": 0.3, "visual_math": 0.2}, processor, CFG, max_length=512)
        if state:
            stream.load_state_dict(state)
        out = [(s.task, tuple(s.input_ids)) for s in itertools.islice(iter(stream), n)]
        return out, stream.state_dict()

    full, _ = run(30)
    head, state = run(18)
    tail, _ = run(12, state)
    assert head + tail == full
