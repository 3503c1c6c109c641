"""KV-cache generation: equal to transformers' greedy generate, log-probs equal to a recomputed
full forward (what an on-policy trainer relies on), stopping rules, sampling controls."""

import copy

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.model.generation import generate, stream
from mimolab.model.language import KVCache

CFG = MiMoVLConfig.from_name("smoke")
PATCH_DIM = 3 * 2 * 14 * 14


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(CFG.to_hf_dict())))
    with torch.no_grad():  # larger weights than the default init: peaked logits, no argmax near-ties
        for p in hf.parameters():
            p.normal_(0, 0.12)
    path = tmp_path_factory.mktemp("ckpt")
    hf.eval().save_pretrained(path)
    return hf, MiMoVL.from_pretrained(path)


def image_row(grid, pre, post, g):
    ids = torch.randint(0, 2000, (pre,), generator=g).tolist()
    if grid:
        n = grid[0] * grid[1] * grid[2] // 4
        ids += [CFG.vision_start_token_id] + [CFG.image_token_id] * n + [CFG.vision_end_token_id]
    return ids + torch.randint(0, 2000, (post,), generator=g).tolist()


def batch(left_pad=True, seed=0):
    """Three prompts of different lengths: an image, text only, another image shape."""
    g = torch.Generator().manual_seed(seed)
    rows = [image_row([1, 4, 6], 3, 5, g), image_row(None, 2, 3, g), image_row([1, 6, 4], 6, 2, g)]
    width = max(map(len, rows))
    ids = torch.full((3, width), CFG.pad_token_id)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left_pad else slice(0, len(r))
        ids[i, cols], mask[i, cols] = torch.tensor(r), 1
    grids = torch.tensor([[1, 4, 6], [1, 6, 4]])
    pixels = torch.randn(int(grids.prod(-1).sum()), PATCH_DIM, generator=g)
    return ids, mask, pixels, grids


def test_greedy_equals_transformers_generate(models):
    hf, ours = models
    ids, mask, pixels, grids = batch(left_pad=True)
    types = (ids == CFG.image_token_id).long()
    ref = hf.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grids,
                      mm_token_type_ids=types, max_new_tokens=32, do_sample=False, eos_token_id=None,
                      pad_token_id=CFG.pad_token_id)
    out = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=32, eos_token_ids=[-1])
    for i in range(3):
        assert out.sequences[i] == ref[i, ids.shape[1]:].tolist()
        assert out.finish_reasons[i] == "length"
    assert len({tuple(s) for s in out.sequences}) == 3  # the rows really differ


def recomputed_logprobs(model, ids, mask, pixels, grids, out, n: int, temperature: float) -> list[torch.Tensor]:
    """Each sampled row's log-probs from one full float32 forward over prompt + answer (no cache)."""
    result = []
    for row in range(len(out.sequences)):
        i = row // n  # the prompt
        real = ids[i][mask[i].bool()].tolist()
        full = torch.tensor([real + out.sequences[row]])
        image = {0: 0, 2: 1}.get(i)  # row 0 holds image 0, row 2 image 1, row 1 none
        row_grids = row_pixels = None
        if image is not None:
            sizes = grids.prod(-1).tolist()
            start = sum(sizes[:image])
            row_grids, row_pixels = grids[image:image + 1], pixels[start:start + sizes[image]]
        with torch.no_grad():
            logits = model(full, pixel_values=row_pixels, image_grid_thw=row_grids).logits[0]
        lp = torch.log_softmax(logits.float() / temperature, -1)
        result.append(lp[len(real) - 1:-1].gather(-1, torch.tensor(out.sequences[row])[:, None])[:, 0])
    return result


@pytest.mark.parametrize("left_pad,n", [(True, 1), (False, 1), (False, 2)])
def test_logprobs_equal_recomputed_forward(models, left_pad, n):
    """Sampled tokens' log-probs from the cache equal those of one full forward over prompt + answer
    (n > 1: each of a prompt's samples continues from its copy of the shared prefill)."""
    _, ours = models
    ids, mask, pixels, grids = batch(left_pad=left_pad, seed=1)
    out = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=12,
                   do_sample=True, temperature=0.7, seed=3, eos_token_ids=[-1], num_return_sequences=n)
    for row, expected in enumerate(recomputed_logprobs(ours, ids, mask, pixels, grids, out, n, 0.7)):
        torch.testing.assert_close(torch.tensor(out.logprobs[row]), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtypes", [{"decode_dtype": "bfloat16"}, {"prefill_dtype": "bfloat16"},
                                    {"prefill_dtype": "bfloat16", "decode_dtype": "bfloat16"}])
def test_bf16_phases_stay_within_bf16_rounding_of_the_float32_forward(models, dtypes):
    """A bfloat16 prefill (autocast) and/or bfloat16 decoding matmuls: the sampled tokens' log-probs stay within
    bf16 rounding of a recomputed float32 forward (what training recomputes), and are not equal to it (the
    phase really ran in bf16; the float32 path matches to 1e-4 above). GRPO with bf16 rollouts therefore
    takes its old log-probs from the update's own forward (test_grpo)."""
    _, ours = models
    ids, mask, pixels, grids = batch(left_pad=True, seed=1)
    out = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=12, do_sample=True,
                   temperature=0.7, seed=3, eos_token_ids=[-1], **dtypes)
    expected = recomputed_logprobs(ours, ids, mask, pixels, grids, out, 1, 0.7)
    dev = max(float((torch.tensor(got) - want).abs().max()) for got, want in zip(out.logprobs, expected))
    assert 1e-5 < dev < 2e-2
    with pytest.raises(ValueError, match="decode_dtype"):
        generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=2, decode_dtype="int8")


def test_bf16_cache_keeps_its_keys_transposed_and_its_values(models):
    """A bfloat16 cache on a CPU holds its keys over a (B, kv_heads, head_dim, max_len) buffer (what the decoding
    step's bf16 matmuls read without a copy): the same numbers as a plain-layout cache after the prefill, after
    rows are repeated (GRPO's group) and after rows leave (eos), with the layout kept throughout."""
    from mimolab.model.generation import GenerationConfig, _prefill

    _, ours = models
    ids, mask, pixels, grids = batch(left_pad=True)
    cfg = GenerationConfig(max_new_tokens=4, decode_dtype="bfloat16")
    with torch.no_grad():
        cache = _prefill(ours, ids, mask, cfg, {"pixel_values": pixels, "image_grid_thw": grids})[0]
    plain = KVCache([k.contiguous() for k in cache.keys], [v.clone() for v in cache.values], cache.length)
    assert cache.keys[0].dtype == torch.bfloat16 and cache.keys[0].stride(-1) != 1 and plain.keys[0].stride(-1) == 1
    for change in (lambda c: c.repeat_rows(2), lambda c: c.select(torch.tensor([True, False, True, True, False, True]))):
        change(cache), change(plain)
        assert all(k.stride(-1) != 1 for k in cache.keys)
        for a, b in zip(cache.keys + cache.values, plain.keys + plain.values):
            assert torch.equal(a[:, :, :cache.length], b[:, :, :plain.length])


def test_bf16_single_query_attention_matches_float32_and_masks_padding():
    """The decoding step's bf16 attention on a CPU (two bf16 matmuls around a float32 softmax, over the transposed
    keys) equals float32 SDPA on the same bf16 numbers to bf16 rounding, and a padded key gets no weight."""
    import torch.nn.functional as F

    from mimolab.model.attention import attention
    from mimolab.model.language import _buffer

    g = torch.Generator().manual_seed(0)
    B, KVH, H, L, D = 3, 2, 4, 9, 16
    q = torch.randn(B, H, 1, D, generator=g).bfloat16()
    k = _buffer((B, KVH, 12, D), "cpu", torch.bfloat16, transposed=True)[:, :, :L]
    k.copy_(torch.randn(B, KVH, L, D, generator=g))
    v = torch.randn(B, KVH, L, D, generator=g).bfloat16()
    mask = torch.zeros(B, 1, 1, L)
    mask[0, ..., :3] = float("-inf")  # row 0's first three keys are padding
    got = attention(q, k, v, causal=True, mask=mask)  # (B, 1, H, D)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(got.float(), want.transpose(1, 2), atol=2e-2, rtol=0)
    v2 = v.clone()
    v2[0, :, :3] = 1e4  # what a padded key carries cannot reach the output
    assert torch.equal(attention(q, k, v2, causal=True, mask=mask)[0], got[0])


@pytest.mark.parametrize("lora", [False, True])
def test_decoding_step_equals_the_model_forward_with_the_cache(models, lora):
    """The decoding step (q/k/v and gate/up stacked, weights prepacked, a rope table, the padding as an
    additive mask) gives the logits of the model's own forward over the cache, step after step; with peft
    LoRA layers (called as they are, not stacked) too, whose adapters change the logits."""
    from mimolab.model.generation import GenerationConfig, _decode_mask, _prefill
    from mimolab.model.language import Decoder
    from mimolab.train.lora import add_lora

    model = copy.deepcopy(models[1])
    if lora:
        add_lora(model, ("llm",), r=4)
        with torch.no_grad():  # lora_B starts at zero: give the adapters an effect
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    ids, mask, pixels, grids = batch(left_pad=True)
    with torch.no_grad():
        cache, logits, next_pos, mask = _prefill(model, ids, mask, GenerationConfig(max_new_tokens=3),
                                                 {"pixel_values": pixels, "image_grid_thw": grids})
        reference_cache = copy.deepcopy(cache)
        decoder = Decoder(model.language_model, model.lm_head, max_position=int(next_pos.max()) + 3)
        additive = _decode_mask(mask, cache.max_len, model.dtype)
        tokens = [logits.argmax(-1)]
        for step in range(3):
            got = decoder(tokens[-1], next_pos + step, cache, additive)
            mask = torch.cat([mask, mask.new_ones(3, 1)], dim=1)
            want = model(tokens[-1][:, None], attention_mask=mask, cache=reference_cache,
                         position_ids=(next_pos + step).view(1, -1, 1).expand(3, -1, 1)).logits[:, -1]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            tokens.append(got.argmax(-1))
        if lora:  # the adapters count: the base weights alone give other logits for the same last step
            base = Decoder(models[1].language_model, models[1].lm_head, max_position=int(next_pos.max()) + 3)
            cache.length -= 1
            assert not torch.allclose(base(tokens[-2], next_pos + 2, cache, additive), got, atol=1e-3)


def repeated(ids, mask, pixels, grids, n):
    """The old rollout path's inputs: every prompt (and its image) repeated n times before the prefill."""
    sizes = grids.prod(-1).tolist()
    images = pixels.split(sizes)
    rep_pixels = torch.cat([im for im in images for _ in range(n)])
    return ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), rep_pixels, grids.repeat_interleave(n, 0)


def test_num_return_sequences_prefills_once_and_samples_as_if_the_prompts_were_repeated(models):
    """n samples per prompt from one prefill: the vision encoder and the prompt forward see each prompt
    once, and with the same seed the tokens, log-probs and stops equal those of repeating the prompts
    first (every sampling step still draws for all B * n rows, in the same order)."""
    _, ours = models
    n = 3
    ids, mask, pixels, grids = batch(seed=2)
    rep = repeated(ids, mask, pixels, grids, n)
    with torch.no_grad():  # the prefill's last logits: one prompt's equal its repeated copies'
        once = ours(ids, mask, pixel_values=pixels, image_grid_thw=grids).logits[:, -1]
        many = ours(rep[0], rep[1], pixel_values=rep[2], image_grid_thw=rep[3]).logits[:, -1]
    torch.testing.assert_close(once.repeat_interleave(n, 0), many, atol=1e-5, rtol=0)
    seen = {"patches": [], "rows": []}
    hooks = [ours.visual.register_forward_pre_hook(lambda m, a: seen["patches"].append(a[0].shape[0])),
             ours.language_model.embed_tokens.register_forward_pre_hook(lambda m, a: seen["rows"].append(a[0].shape))]
    kw = dict(max_new_tokens=10, do_sample=True, temperature=1.3, seed=5)
    try:
        new = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, num_return_sequences=n,
                       eos_token_ids=[-1], **kw)
    finally:
        for h in hooks:
            h.remove()
    assert seen["patches"] == [pixels.shape[0]] and seen["rows"][0][0] == 3  # once per prompt
    assert [shape[0] for shape in seen["rows"][1:]] == [3 * n] * 9  # then every row decodes
    stop = new.sequences[4][3]  # an eos that some rows sample mid-way: rows leave the expanded batch
    for eos in ([-1], [stop]):
        new = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, num_return_sequences=n,
                       eos_token_ids=eos, **kw)
        old = generate(ours, *rep[:2], pixel_values=rep[2], image_grid_thw=rep[3], eos_token_ids=eos, **kw)
        assert new.sequences == old.sequences and new.finish_reasons == old.finish_reasons
        for a, b in zip(new.logprobs, old.logprobs):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    assert "eos" in new.finish_reasons and "length" in new.finish_reasons
    assert all(len({tuple(s) for s in new.sequences[i * n:(i + 1) * n]}) > 1 for i in range(3))  # independent samples
    greedy = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, num_return_sequences=n,
                      max_new_tokens=8, eos_token_ids=[-1])
    single = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=8, eos_token_ids=[-1])
    assert greedy.sequences == [s for s in single.sequences for _ in range(n)]


def test_eos_stops_rows_and_others_continue(models):
    _, ours = models
    ids, mask, pixels, grids = batch()
    free = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=10, eos_token_ids=[-1])
    stop_token = free.sequences[1][3]  # row 1 emits this at step 3 (greedy)
    out = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=10,
                   eos_token_ids=[stop_token])
    assert out.finish_reasons[1] == "eos"
    first = free.sequences[1].index(stop_token)
    assert out.sequences[1] == free.sequences[1][:first + 1]
    for i in (0, 2):  # rows that never emit it are unaffected by row 1 leaving the batch
        if stop_token not in free.sequences[i]:
            assert out.sequences[i] == free.sequences[i] and out.finish_reasons[i] == "length"


class CharTokenizer:
    """Decodes token ids as letters: enough to test stop strings without a vocabulary file."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(97 + i % 26) for i in ids)


def test_stop_strings(models):
    _, ours = models
    ids, mask, pixels, grids = batch()
    tok = CharTokenizer()
    free = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=12, eos_token_ids=[-1])
    target = tok.decode(free.sequences[0][4:6])
    out = generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, max_new_tokens=12, eos_token_ids=[-1],
                   stop_strings=[target], tokenizer=tok)
    assert out.finish_reasons[0] == "stop_string"
    assert target in out.texts[0] and len(out.sequences[0]) <= 6
    with pytest.raises(ValueError, match="tokenizer"):
        generate(ours, ids, mask, pixel_values=pixels, image_grid_thw=grids, stop_strings=["x"])


def test_sampling_controls(models):
    _, ours = models
    ids, mask, pixels, grids = batch()
    kw = dict(pixel_values=pixels, image_grid_thw=grids, max_new_tokens=8, eos_token_ids=[-1])
    greedy = generate(ours, ids, mask, **kw)
    top1 = generate(ours, ids, mask, do_sample=True, top_k=1, seed=0, **kw)
    assert top1.sequences == greedy.sequences
    a = generate(ours, ids, mask, do_sample=True, temperature=1.5, top_p=0.9, seed=7, **kw)
    b = generate(ours, ids, mask, do_sample=True, temperature=1.5, top_p=0.9, seed=7, **kw)
    c = generate(ours, ids, mask, do_sample=True, temperature=1.5, top_p=0.9, seed=8, **kw)
    assert a.sequences == b.sequences and a.sequences != c.sequences


def test_top_p_keeps_only_the_nucleus(models):
    """With top_p tiny only the most likely token survives: sampling equals greedy."""
    _, ours = models
    ids, mask, pixels, grids = batch()
    kw = dict(pixel_values=pixels, image_grid_thw=grids, max_new_tokens=8, eos_token_ids=[-1])
    assert generate(ours, ids, mask, do_sample=True, top_p=1e-6, seed=1, **kw).sequences == generate(ours, ids, mask, **kw).sequences


def test_stream_yields_the_generated_text(models):
    _, ours = models
    ids, mask, pixels, grids = batch()
    tok = CharTokenizer()
    row = ids[1:2, mask[1].bool()]
    pieces = list(stream(ours, row, tokenizer=tok, max_new_tokens=6, eos_token_ids=[-1]))
    full = generate(ours, row, tokenizer=tok, max_new_tokens=6, eos_token_ids=[-1])
    assert "".join(pieces) == full.texts[0] and len(pieces) == 6
    with pytest.raises(ValueError, match="single sequence"):
        list(stream(ours, row, tokenizer=tok, num_return_sequences=2))


def test_generated_placeholder_ids_are_plain_text(models):
    """An untrained model may emit <|image_pad|>; a decoding step embeds it as a plain token."""
    _, ours = models
    ids = torch.tensor([[5, 6, 7, CFG.image_token_id]])
    pos = torch.arange(4).view(1, 1, 4).expand(3, 1, 4)
    cache = KVCache.empty(CFG.text, 1, 8, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        ours(ids[:, :3], cache=cache, position_ids=pos[..., :3])
        step = ours(ids[:, 3:], cache=cache, position_ids=pos[..., 3:]).logits[:, -1]
        hidden = ours.language_model(ours.language_model.embed_tokens(ids), pos)
        reference = ours.lm_head(ours.language_model.norm(hidden))[:, -1]
    torch.testing.assert_close(step, reference, atol=1e-5, rtol=0)


def test_suppressed_tokens_are_never_generated_and_leave_the_distribution(models):
    """RL rollouts suppress media placeholders: never sampled, greedy or not (the GRPO tests check that the
    trainer's recomputed log-probs, with the same mask, equal the generator's)."""
    _, ours = models
    ids, mask, pixels, grids = batch()
    kw = dict(pixel_values=pixels, image_grid_thw=grids, max_new_tokens=6, eos_token_ids=[-1])
    greedy = generate(ours, ids, mask, **kw)
    banned = sorted({row[0] for row in greedy.sequences})
    again = generate(ours, ids, mask, suppress_token_ids=banned, **kw)
    assert all(t not in banned for row in again.sequences for t in row)
    sampled = generate(ours, ids, mask, do_sample=True, seed=3, suppress_token_ids=banned, **kw)
    assert all(t not in banned for row in sampled.sequences for t in row)
    # the masked distribution sums to one over the allowed tokens: a log-prob can only rise
    assert all(lp <= 0 for row in sampled.logprobs for lp in row)
