"""Benchmark files a user already has (MC VQA as JSONL or MMBench-style TSV, RefCOCO-style grounding,
VQA JSONL): read into samples, bad records counted, scored by the same metrics (boxes rescaled from
the resized frame); ``run_eval`` writes the results table and figure for think and no-think modes."""

import base64
import csv
import io
import json

import pytest
from PIL import Image

from mimolab.eval.benchmarks import load_benchmark
from mimolab.eval.metrics import score


def png_base64(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def files(tmp_path):
    Image.new("RGB", (500, 300), "white").save(tmp_path / "wide.png")
    mcq = tmp_path / "mcq.jsonl"
    mcq.write_text("\n".join([
        json.dumps({"image": "wide.png", "question": "What colour is it?", "options": ["red", "white"], "answer": "B"}),
        "{not json",
        json.dumps({"image": "missing.png", "question": "?", "options": ["a", "b"], "answer": "A"}),
        json.dumps({"image": "wide.png", "question": "?", "options": ["a", "b"], "answer": "E"}),
        json.dumps({"image": "wide.png", "question": "Is it blank?", "options": ["yes", "no"], "answer": "A"}),
    ]))
    tsv = tmp_path / "mmbench.tsv"
    with tsv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "question", "A", "B", "C", "D", "answer", "image"], delimiter="\t")
        writer.writeheader()
        writer.writerow({"index": 0, "question": "Which shape?", "A": "circle", "B": "square", "C": "triangle", "D": "",
                         "answer": "C", "image": png_base64(Image.new("RGB", (64, 64), "red"))})
    ref = tmp_path / "refcoco.jsonl"
    ref.write_text(json.dumps({"image": "wide.png", "sent": "the left box", "bbox": [100, 60, 100, 60]}) + "\n")
    vqa = tmp_path / "vqa.jsonl"
    vqa.write_text(json.dumps({"image": "wide.png", "question": "What colour?", "answers": ["White", "white color"]}) + "\n"
                   + json.dumps({"image": "wide.png", "question": "How many?", "answer": "2"}) + "\n")
    return {"mcq": mcq, "tsv": tsv, "ref": ref, "vqa": vqa}


def test_multiple_choice_files_load_and_bad_records_are_counted(files):
    samples, skipped = load_benchmark(files["mcq"])
    assert [s.answer["letter"] for s in samples] == ["B", "A"]
    assert "A. red\nB. white" in samples[0].prompt and samples[0].images[0].size == (500, 300)
    assert skipped == {"not JSON": 1, "image file missing": 1, "answer is not one of the option letters": 1}
    (tsv,), _ = load_benchmark(files["tsv"])
    assert tsv.task == "mcq" and tsv.answer["letter"] == "C" and "D." not in tsv.prompt
    assert tsv.images[0].getpixel((0, 0)) == (255, 0, 0)  # the base64 image, decoded
    for reply, want in (("C", 1.0), ("(C) triangle", 1.0), ("The answer is C.", 1.0), ("A circle", 0.0), ("B", 0.0)):
        assert score("mcq", reply, tsv.answer, tsv.reply) == want, reply


def test_refcoco_boxes_are_rescaled_from_the_resized_image(files):
    from mimolab.data.pipeline import world_processor, world_tokenizer
    from mimolab.eval.harness import with_view_size

    (sample,), _ = load_benchmark(files["ref"])
    assert sample.task == "refcoco" and sample.answer["bbox_2d"] == [100, 60, 200, 120]  # x, y, w, h -> corners
    answer = with_view_size(sample, world_processor(world_tokenizer(n_per_task=3)))
    (w, h), (rw, rh) = answer["image_size"], answer["resized_size"]
    assert (rw, rh) != (w, h)  # the processor resizes this image, so rescaling matters
    reply = json.dumps([{"bbox_2d": [100 * rw / w, 60 * rh / h, 200 * rw / w, 120 * rh / h]}])
    assert score("refcoco", reply, answer, sample.reply) == 1.0
    assert score("refcoco", reply, sample.answer, sample.reply) == 0.0  # not rescaled: it misses
    assert score("refcoco", '[{"bbox_2d": [300, 200, 400, 280]}]', answer, sample.reply) == 0.0
    assert score("refcoco", "somewhere on the left", answer, sample.reply) == 0.0


def test_vqa_matches_any_answer_after_normalising(files):
    samples, _ = load_benchmark(files["vqa"])
    assert score("vqa", "white.", samples[0].answer, samples[0].reply) == 1.0
    assert score("vqa", "White Color", samples[0].answer, samples[0].reply) == 1.0
    assert score("vqa", "black", samples[0].answer, samples[0].reply) == 0.0
    assert samples[1].answer["answers"] == ["2"]


def test_unknown_format_and_empty_files_fail_clearly(tmp_path):
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"picture": "x.png", "caption": "hi"}) + "\n")
    with pytest.raises(ValueError, match="cannot tell the benchmark format"):
        load_benchmark(odd)
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps({"image": "gone.png", "question": "?", "answer": "x"}) + "\n")
    with pytest.raises(ValueError, match="no usable record"):
        load_benchmark(none)


def test_run_eval_writes_tables_and_figure_for_both_modes(files, tmp_path):
    import torch

    from mimolab import MiMoVL
    from mimolab.data.pipeline import world_processor, world_tokenizer
    from mimolab.eval.run import run_eval
    from mimolab.train.checkpoints import save_final

    torch.manual_seed(0)
    checkpoint = save_final(MiMoVL.from_preset("smoke"), world_processor(world_tokenizer(n_per_task=3)), tmp_path / "ckpt")
    rows = run_eval(checkpoint, tasks=["counting"], n=3, benchmarks=[files["mcq"], files["vqa"]],
                    modes=("think", "no_think"), out=tmp_path / "eval", progress=False)
    assert [(r.task, r.mode) for r in rows] == [(t, m) for m in ("think", "no_think") for t in ("counting", "mcq", "vqa")]
    assert all(0 <= r.score <= 1 and len(r.per_sample) == r.n for r in rows)
    with (tmp_path / "eval" / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and {t["mode"] for t in table} == {"think", "no_think"}
    assert [t["decoding"] for t in table] == [r.decoding for r in rows] and rows[0].decoding == "greedy"
    assert "**no_think**" in (tmp_path / "eval" / "results.md").read_text()
    assert Image.open(tmp_path / "eval" / "results.png").size[0] > 0
    with pytest.raises(ValueError, match="modes"):
        run_eval(checkpoint, tasks=[], modes=("fast",))
