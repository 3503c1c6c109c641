"""Your checkpoint, your data: ``mimolab sft``, ``mimolab grpo`` and ``mimolab pages`` on a tiny
Qwen2.5-VL checkpoint built with transformers whose tokenizer is the real Qwen2.5-VL vocabulary and
chat template, on files the tests write (a JSONL with images, its parquet and save_to_disk twins, a
prompt file, a multi-page PDF)."""

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from qwen_vocab import qwen_tokenizer

from mimolab import MiMoVL, MiMoVLConfig
from mimolab.data.files import cycle_source, dataset_source, file_source, is_held_out, split_source
from mimolab.processing import MiMoVLProcessor, image_processor
from mimolab.tokenizer import QWEN25_VL_CHAT_TEMPLATE

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
QUESTION = "What color is the square?"


def qwen_config() -> MiMoVLConfig:
    return MiMoVLConfig.from_name("smoke").replace(
        text={"vocab_size": 151680}, image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643)


def wanted_match(completions, wanted, **kwargs):
    """A column-driven exact-match reward (TRL's signature): the reply is the record's ``wanted`` word."""
    return [float(c.replace("<|im_end|>", "").strip() == w) for c, w in zip(completions, wanted)]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A checkpoint saved by transformers (real vocabulary, Qwen2.5-VL's own chat template), 40 chat records
    with images (the colour of a square), and a prompt file of the same images with a ``wanted`` column."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    root = tmp_path_factory.mktemp("qwen")
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**copy.deepcopy(qwen_config().to_hf_dict()))).save_pretrained(
        root / "ckpt")
    tok = qwen_tokenizer()
    tok.chat_template = QWEN25_VL_CHAT_TEMPLATE
    small_images = image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)  # 56x56 -> 4 tokens
    MiMoVLProcessor(tok, small_images).save_pretrained(root / "ckpt")
    (root / "images").mkdir()
    rng, chat, prompts = random.Random(0), [], []
    for i in range(40):
        color = list(COLORS)[i % 4]
        image = Image.new("RGB", (56, 56), "white")
        x, y = rng.randint(0, 20), rng.randint(0, 20)
        ImageDraw.Draw(image).rectangle([x, y, x + 30, y + 30], fill=COLORS[color])
        image.save(root / "images" / f"{i:03d}.png")
        user = {"role": "user", "content": [{"type": "image", "image": f"images/{i:03d}.png"},
                                            {"type": "text", "text": QUESTION}]}
        chat.append({"id": f"color-{i:03d}", "task": "color", "messages": [
            user, {"role": "assistant", "content": [{"type": "text", "text": color}]}]})
        prompts.append({"id": f"color-{i:03d}", "task": "color", "messages": [user], "color": color, "wanted": "blue"})
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    return root


def sft(qwen, out, **changes):
    from mimolab.pipeline.sft import run_sft

    settings = dict(steps=40, lr=1e-2, row_tokens=256, rows_per_step=2, warmup_steps=4, checkpoint_every=20,
                    tracking="disabled", progress=False)
    return run_sft(qwen / "ckpt", [str(changes.pop("data", qwen / "chat.jsonl"))], out, **{**settings, **changes})


@pytest.fixture(scope="module")
def sft_run(qwen):
    return sft(qwen, qwen / "sft", eval_split=0.2)


def image_chat(processor, index: int, root: Path) -> dict:
    image = Image.open(root / "images" / f"{index:03d}.png")
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    return processor(processor.apply_chat_template(chat), images=[image])


# ------------------------------------------------------------------------------------------ sft
@pytest.mark.slow
def test_sft_lowers_the_held_out_loss_of_a_jsonl_with_images(sft_run):
    (row,) = sft_run.heldout
    assert row["n"] == 8  # 0.2 of 40 records, spread over the file, never trained on
    assert row["after"] < row["before"] and row["change"] < -2 * row["stderr"], row
    assert sft_run.train_loss_last < sft_run.train_loss_first


@pytest.mark.slow
def test_sft_output_loads_in_transformers_with_equal_logits(sft_run, qwen):
    from transformers import Qwen2_5_VLForConditionalGeneration

    final = Path(sft_run.final)
    processor = MiMoVLProcessor.from_pretrained(final)
    assert processor.tokenizer.chat_template == QWEN25_VL_CHAT_TEMPLATE  # the checkpoint's own template, kept
    inputs = image_chat(processor, 3, qwen)
    ours = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        theirs = Qwen2_5_VLForConditionalGeneration.from_pretrained(final).eval()(**inputs).logits
        mine = MiMoVL.from_pretrained(final).eval()(**ours).logits
        start = MiMoVL.from_pretrained(qwen / "ckpt").eval()(**ours).logits
    assert (theirs - mine).abs().max() < 1e-4
    assert (start - mine).abs().max() > 1.0  # and the weights did move


def test_assistant_only_loss_with_the_real_vocabulary_and_the_checkpoints_template(qwen):
    from mimolab.data.tokenize import record_tokenizer

    processor = MiMoVLProcessor.from_pretrained(qwen / "ckpt")
    record = json.loads((qwen / "chat.jsonl").read_text().splitlines()[0])
    sample = record_tokenizer(processor, qwen_config(), 256)({**record, "_base_dir": str(qwen)}, "chat")
    targets = [t for t in sample.labels if t != -100]
    assert targets == processor.tokenizer("red")["input_ids"] + [151645]  # the reply and <|im_end|>, nothing else
    assert "You are a helpful assistant." in processor.tokenizer.decode(sample.input_ids)  # Qwen's system turn
    assert sample.input_ids.count(151655) == 4  # 56x56 -> a 4x4 patch grid -> 4 merged <|image_pad|>


@pytest.mark.slow
def test_a_killed_sft_run_resumes_with_the_losses_of_an_uninterrupted_one(qwen, tmp_path):
    from mimolab.train.tracking import read_metrics

    def crash(record):
        if record["step"] == 3:
            raise KeyboardInterrupt  # killed after step 3, whose checkpoint was never written

    sft(qwen, tmp_path / "straight", steps=4, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        sft(qwen, tmp_path / "killed", steps=4, checkpoint_every=2, log=crash)
    assert not (tmp_path / "killed" / "final").exists()
    resumed = sft(qwen, tmp_path / "killed", steps=4, checkpoint_every=2)
    assert resumed.steps == 4
    straight, killed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "killed")
    assert [r["step"] for r in killed] == [1, 2, 3, 4]
    for a, b in zip(straight, killed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]


@pytest.mark.slow
def test_lora_sft_saves_a_peft_adapter_that_peft_loads_onto_transformers(qwen, tmp_path):
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mimolab.train.lora import load_lora

    final = Path(sft(qwen, tmp_path / "lora", steps=3, lora_rank=4, freeze="vision").final)
    assert (final / "adapter" / "adapter_config.json").exists()
    base, start = (MiMoVL.from_pretrained(path).state_dict() for path in (final, qwen / "ckpt"))
    assert base.keys() == start.keys() and all(torch.equal(base[k], start[k]) for k in base)  # adapters only
    inputs = image_chat(MiMoVLProcessor.from_pretrained(final), 5, qwen)
    ours = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    mine = MiMoVL.from_pretrained(final)
    load_lora(mine, final / "adapter")
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(Qwen2_5_VLForConditionalGeneration.from_pretrained(final),
                                           final / "adapter").eval()(**inputs).logits
        with_adapters = mine.eval()(**ours).logits
        plain = MiMoVL.from_pretrained(final).eval()(**ours).logits
    assert (theirs - with_adapters).abs().max() < 1e-4
    assert (plain - with_adapters).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------ datasets files
def as_hf_dataset(qwen):
    """The chat JSONL as a ``datasets`` table in TRL's vision layout: an ``images`` column and
    ``{"type": "image"}`` items in the messages."""
    import datasets

    rows = []
    for line in (qwen / "chat.jsonl").read_text().splitlines():
        record = json.loads(line)
        images = [Image.open(qwen / item["image"]) for m in record["messages"] for item in m["content"]
                  if item["type"] == "image"]
        messages = [{**m, "content": [{"type": "image"} if c["type"] == "image" else c for c in m["content"]]}
                    for m in record["messages"]]
        rows.append({**record, "messages": messages, "images": images})
    return datasets.Dataset.from_list(rows)


@pytest.fixture(scope="module")
def hf_files(qwen):
    pytest.importorskip("datasets", reason="parquet and saved data sets need the files extra")
    data = as_hf_dataset(qwen)
    data.to_parquet(str(qwen / "chat.parquet"))
    data.save_to_disk(str(qwen / "chat_saved"))
    return {"parquet": qwen / "chat.parquet", "saved": qwen / "chat_saved"}


@pytest.mark.parametrize("kind", ["parquet", "saved"])
def test_datasets_files_give_the_jsonl_records_token_for_token(qwen, hf_files, kind):
    from mimolab.data.tokenize import record_tokenizer

    tokenize = record_tokenizer(MiMoVLProcessor.from_pretrained(qwen / "ckpt"), qwen_config(), 256)
    jsonl, theirs = list(file_source(qwen / "chat.jsonl")(0)), list(file_source(hf_files[kind])(0))
    assert len(jsonl) == len(theirs) == 40
    for a, b in zip(jsonl[::7], theirs[::7]):
        x, y = tokenize(a, "chat"), tokenize(b, "chat")
        assert x.input_ids == y.input_ids and x.labels == y.labels and x.task == y.task == "color"
        assert torch.equal(x.pixel_values, y.pixel_values)
    assert next(dataset_source(hf_files[kind])(25))["id"] == "color-025"  # streams from any position


@pytest.mark.slow
def test_sft_from_a_parquet_file_trains_exactly_as_from_the_jsonl(qwen, hf_files, tmp_path):
    from mimolab.train.tracking import read_metrics

    sft(qwen, tmp_path / "jsonl", steps=3)
    sft(qwen, tmp_path / "parquet", steps=3, data=hf_files["parquet"])
    losses = [[r["loss"] for r in read_metrics(tmp_path / name)] for name in ("jsonl", "parquet")]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_file_streams_cycle_resume_and_never_yield_held_out_records(qwen):
    source = lambda: cycle_source(split_source(file_source(qwen / "chat.jsonl"), 0.2, held_out=False))  # noqa: E731
    stream = source()(0)
    ids = [next(stream)["id"] for _ in range(100)]  # 32 training records per pass: three passes and a bit
    assert not any(is_held_out(int(i[-3:]), 0.2) for i in ids) and len(set(ids)) == 32
    assert ids[32:64] == ids[:32]
    resumed = source()(70)  # a resumed job: straight to the 71st record, in its third pass
    assert [next(resumed)["id"] for _ in range(30)] == ids[70:]
    held = list(split_source(file_source(qwen / "chat.jsonl"), 0.2, held_out=True)(0))
    assert [r["id"] for r in held] == [f"color-{i:03d}" for i in (4, 9, 12, 17, 25, 30, 33, 38)]


def test_a_stage_names_data_files_beside_world_tasks(qwen):
    from mimolab.data.files import data_mixture
    from mimolab.train.stage import Stage

    stage = Stage(shares={"counting": 0.25}, data={str(qwen / "chat.jsonl"): 0.75})
    processor = MiMoVLProcessor.from_pretrained(qwen / "ckpt")
    sampler = data_mixture(stage.shares, stage.data, processor, qwen_config(), max_length=256)
    tasks = [sample.task for _, sample in zip(range(40), sampler)]
    assert set(tasks) == {"counting", "color"}  # world samples and the file's records, one stream
    assert sampler.token_shares()["chat"] == pytest.approx(0.75, abs=0.05)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        Stage(data={str(qwen / "missing.jsonl"): 1.0})
    with pytest.raises(ValueError, match="no positive token share"):
        Stage(shares={}, data={str(qwen / "chat.jsonl"): 0.0})


# ------------------------------------------------------------------------------------------ grpo
@pytest.mark.slow
def test_grpo_raises_a_column_driven_reward_on_a_prompt_file(sft_run, qwen, tmp_path):
    """From the fine-tuned checkpoint (which names one of four colours at random): the reward is the
    ``wanted`` column's word; the first update's ratio is 1 (on-policy) and the held-out greedy reward,
    before and after on the same records, rises."""
    from mimolab.pipeline.grpo_files import run_grpo_files

    result = run_grpo_files(sft_run.final, qwen / "prompts.jsonl", [wanted_match], tmp_path / "grpo", profile="smoke",
                            eval_split=0.2, steps=12, group_size=4, prompts_per_step=4, max_new_tokens=4, lr=3e-3,
                            row_tokens=128, tracking="disabled", progress=False)
    assert result.first_ratio_max_dev < 1e-4
    (change,) = result.morl.changes
    assert change.n == 8 and change.after > change.before and change.significant, change
    assert result.reward_last > result.reward_first


@pytest.mark.slow
def test_a_resumed_grpo_run_draws_the_prompts_of_an_uninterrupted_one(sft_run, qwen, tmp_path):
    from mimolab.data.files import PromptFile, read_records
    from mimolab.rl.grpo import GRPOConfig
    from mimolab.rl.trainer import GRPOTrainer

    def trainer(run_dir):
        model, processor = MiMoVL.from_pretrained(sft_run.final), MiMoVLProcessor.from_pretrained(sft_run.final)
        cfg = GRPOConfig(prompts_per_step=2, group_size=2, max_new_tokens=3, lr=3e-3, row_tokens=128)
        return GRPOTrainer(model, processor, cfg, run_dir, rewards=[wanted_match],
                           prompts=PromptFile(read_records(qwen / "prompts.jsonl"), seed=1))

    straight = trainer(tmp_path / "a").train(steps=2, progress=False)
    trainer(tmp_path / "b").train(steps=1, progress=False, checkpoint_every=1)
    again = trainer(tmp_path / "b")
    assert again.resume() and again.prompts.position == 2
    (tail,) = again.train(steps=2, progress=False)
    for key in ("reward", "response_length", "loss"):
        assert tail.get(key) == pytest.approx(straight[1].get(key), abs=1e-6), key


@pytest.mark.slow
def test_a_bad_prompt_file_is_refused_naming_the_record_and_column_before_training(qwen, tmp_path):
    from mimolab.pipeline.grpo_files import run_grpo_files

    good = json.loads((qwen / "prompts.jsonl").read_text().splitlines()[0])
    cases = [({**good, "task": "color"}, ["verifiable"], "'color-000' (line 1): task 'color' has no reward"),
             ({k: v for k, v in good.items() if k != "wanted"}, [wanted_match], "no column 'wanted'"),
             ({**good, "task": "counting", "answer": {"n": 3}}, ["verifiable"], "no column 'answer.count'"),
             ({**good, "messages": [{"role": "assistant", "content": "hi"}]}, [wanted_match], "no user turn")]
    for record, rewards, message in cases:
        path = tmp_path / "prompts.jsonl"
        path.write_text(json.dumps(record) + "\n")
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run_grpo_files(tmp_path / "no-such-checkpoint", path, rewards, tmp_path / "out")  # fails before loading
    path.write_text(json.dumps(good) + "\n{not json\n")
    done = subprocess.run([sys.executable, "-m", "mimolab", "grpo", str(tmp_path / "none"), "--prompts", str(path),
                           "--reward", "format", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode != 0 and "line 2: not JSON" in done.stderr and "Traceback" not in done.stderr


def test_the_verifiable_rewards_need_what_the_column_table_says():
    """Every task a verifiable reward scores has an entry; a world record passes; without its answer (and
    reply) it is refused, and rightly: the reward itself could not tell the right reply from nonsense."""
    from mimolab.data.world import generate
    from mimolab.pipeline.grpo_files import ANSWER_NEEDS, check_prompts
    from mimolab.rl.rewards import SCORERS, _score_one, default_rewards
    from mimolab.rl.service import RewardRouter

    assert set(SCORERS) <= set(ANSWER_NEEDS)
    router = RewardRouter(default_rewards())  # (checking starts none of the rewards' worker processes)
    for task in SCORERS:
        sample = generate(task, 0)
        record = {"task": task, "messages": [{"role": m["role"], "content": [
            {"type": "text", "text": c["text"]} for c in m["content"] if c["type"] == "text"]}
            for m in sample.messages], "answer": sample.answer}
        check_prompts([record], router, "world", "x")
        assert _score_one(task, sample.reply, {"answer": sample.answer, "reference": sample.reply}, None)[0] > 0, task
        stripped = {**record, "answer": {}, "messages": record["messages"][:1]}
        with pytest.raises(ValueError, match="no column '(answer\\.|reference)"):
            check_prompts([stripped], router, "world", "x")
        # without them the reward cannot tell the right reply from nonsense (video even gives both a free 1)
        blind = [_score_one(task, reply, {"answer": {}}, None)[0] for reply in (sample.reply, "nonsense")]
        assert blind[0] == blind[1], task


# ------------------------------------------------------------------------------------------ pages
def write_pdf(path: Path, n: int) -> None:
    pages = []
    for i in range(n):
        page = Image.new("RGB", (300, 420), "white")
        draw = ImageDraw.Draw(page)
        draw.text((20, 20), f"Page {i + 1}", fill="black")
        draw.rectangle([40, 80, 60 + 30 * i, 140], fill=list(COLORS.values())[i % 4])
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:])


@pytest.mark.slow
def test_pages_answers_every_page_once_resumes_a_killed_run_and_counts_unreadable_files(qwen, tmp_path):
    pytest.importorskip("pypdfium2", reason="PDF pages need the files extra")
    from mimolab.pipeline.pages import run_pages

    write_pdf(tmp_path / "doc.pdf", 5)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a PDF")
    files = [tmp_path / "doc.pdf", tmp_path / "broken.pdf"]
    run = lambda out, **kw: run_pages(files, qwen / "ckpt", QUESTION, out, batch_size=2, max_new_tokens=3, **kw)  # noqa: E731

    straight = run(tmp_path / "straight.jsonl")
    assert straight.answered == 5 and straight.unreadable == {"unreadable file": 1}

    def kill(answered):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed.jsonl", on_batch=kill)
    with open(tmp_path / "killed.jsonl", "a") as f:
        f.write('{"file": "doc.pdf", "page": 3, "pro')  # the kill cut a line short
    resumed = run(tmp_path / "killed.jsonl")
    assert resumed.already == 2 and resumed.answered == 3
    rows = [json.loads(line) for line in (tmp_path / "killed.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "straight.jsonl").read_text().splitlines()]
    assert [r["page"] for r in rows] == [1, 2, 3, 4, 5] and rows == expected
    limit = MiMoVLProcessor.from_pretrained(qwen / "ckpt").image_processor.size["longest_edge"]
    assert all(r["width"] * r["height"] <= limit and {"answer", "think"} <= set(r) for r in rows)
