"""One bad JSONL line never stops a stream: every class of malformed line is a counted skip with its
reason, and every good record around it (before and after, in the same read buffer) comes through, in
the training stream (``jsonl_source`` + ``MixtureSampler``) and in ``read_jsonl``."""

import io
import json
import struct
import zlib

import pytest
from PIL import Image

from mimolab import MiMoVLConfig
from mimolab.data.mixture import MixtureSampler, SkipCounter
from mimolab.data.schema import read_jsonl
from mimolab.data.sources import jsonl_source
from mimolab.data.tokenize import record_tokenizer
from mimolab.processing import MiMoVLProcessor, image_processor
from mimolab.tokenizer import train_synthetic_tokenizer

CFG = MiMoVLConfig.from_name("smoke")


@pytest.fixture(scope="module")
def processor():
    return MiMoVLProcessor(train_synthetic_tokenizer(), image_processor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16))


def good(i: int, image: str | None = None) -> dict:
    """A well-formed record whose reply names it ('answer i'), with an image when given."""
    question = [{"type": "image", "image": image}] if image else []
    question.append({"type": "text", "text": f"question {i}"})
    return {"task": "counting", "messages": [{"role": "user", "content": question},
                                             {"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]}]}


def chat(*user_items, assistant="a") -> dict:
    return {"messages": [{"role": "user", "content": list(user_items)}, {"role": "assistant", "content": assistant}]}


def bomb_png() -> bytes:
    """A 1x1 PNG whose header claims 30000 x 30000 pixels (PIL refuses > 2 x 89M as a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", 30000, 30000)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    return bytes(data)


# (the bad line as bytes, the reason it is counted under)
BAD_LINES = {
    "invalid UTF-8": (b'{"messages": "caf\xe9"}', "not UTF-8"),
    "not JSON": (b"{broken json", "not JSON"),
    "null": (b"null", "not a JSON object"),
    "array": (b"[1, 2, 3]", "not a JSON object"),
    "number": (b"42", "not a JSON object"),
    "no messages": (json.dumps({"task": "counting", "answer": {"count": 3}}).encode(), "no messages"),
    "messages not a list": (json.dumps({"messages": "hello"}).encode(), "messages not a list"),
    "message a string": (json.dumps({"messages": ["hello", {"role": "assistant", "content": "a"}]}).encode(),
                         "message not an object"),
    "content of the wrong type": (json.dumps({"messages": [{"role": "user", "content": 5},
                                                           {"role": "assistant", "content": "a"}]}).encode(),
                                  "content not a string or list"),
    "image without a path": (json.dumps(chat({"type": "image"}, {"type": "text", "text": "q"})).encode(),
                             "image without a path"),
    "image not a path": (json.dumps(chat({"type": "image", "image": 7}, {"type": "text", "text": "q"})).encode(),
                         "image not a path"),
    "decompression bomb": (json.dumps(chat({"type": "image", "image": "bomb.png"}, {"type": "text", "text": "q"})).encode(),
                           "image too large"),
    "text not a string": (json.dumps(chat({"type": "text", "text": 5})).encode(), "text not a string"),
    "task not a string": (json.dumps({**good(99), "task": 5}).encode(), "task not a string"),
}


def write(tmp_path, lines: list[bytes]):
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", (56, 56), "red").save(tmp_path / "images" / "red.png")
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def stream(path, processor):
    sampler = MixtureSampler({"mine": jsonl_source(path)}, {"mine": 1.0}, record_tokenizer(processor, CFG, max_length=512))
    return [processor.tokenizer.decode([t for t, label in zip(s.input_ids, s.labels) if label != -100])
            for s in sampler], sampler


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_each_bad_line_is_a_counted_skip(processor, tmp_path, name):
    line, reason = BAD_LINES[name]
    path = write(tmp_path, [json.dumps(good(0)).encode(), line, json.dumps(good(1, "images/red.png")).encode()])
    replies, sampler = stream(path, processor)
    assert replies == ["answer 0<|im_end|>", "answer 1<|im_end|>"]
    assert dict(sampler.skips.counts) == {reason: 1}
    skips = SkipCounter()
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
             for r in read_jsonl(path, skips) for m in r["messages"][1:]]
    assert texts == (["answer 0", "a", "answer 1"] if name == "decompression bomb" else ["answer 0", "answer 1"])
    # read_jsonl does not open images: the bomb is the tokenizer's to find, every other class is the reader's
    assert dict(skips.counts) == ({} if name == "decompression bomb" else {reason: 1})


def test_a_file_mixing_every_bad_class_keeps_every_good_record(processor, tmp_path):
    """Good records between all the bad ones, the first before the invalid UTF-8 line (a text-mode reader
    decodes a whole buffer at once and loses it), one after a byte-order mark, and an empty line that
    still keeps positions."""
    lines, n_good, read = [], 0, []
    for name, (line, _) in BAD_LINES.items():
        lines += [json.dumps(good(n_good, "images/red.png" if n_good % 3 == 0 else None)).encode(), line]
        read += [f"answer {n_good}"] + (["a"] if name == "decompression bomb" else [])  # its image is not opened
        n_good += 1
    lines += [b"", json.dumps(good(n_good)).encode()]
    read.append(f"answer {n_good}")
    n_good += 1
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a byte-order mark, as some editors save: still a good record
    path = write(tmp_path, lines)
    replies, sampler = stream(path, processor)
    assert replies == [f"answer {i}<|im_end|>" for i in range(n_good)]
    expected = {}
    for _, reason in BAD_LINES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(sampler.skips.counts) == {**expected, "empty line": 1}
    assert sampler.consumed["mine"] == len(lines)  # one position per line: a resumed stream starts at the right line

    skips = SkipCounter()
    records = list(read_jsonl(path, skips))
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for r in records
             for m in r["messages"][1:]]
    assert texts == read
    assert records[0]["messages"][0]["content"][0]["image"] == str(tmp_path / "images" / "red.png")
    del expected["image too large"]
    assert dict(skips.counts) == expected


def test_a_resumed_stream_skips_to_the_same_line(processor, tmp_path):
    """Positions count lines, bad ones included: stopping after k items and reopening at k gives the rest."""
    lines = [json.dumps(good(0)).encode(), BAD_LINES["invalid UTF-8"][0], BAD_LINES["null"][0],
             json.dumps(good(1)).encode(), json.dumps(good(2)).encode()]
    path = write(tmp_path, lines)
    source = jsonl_source(path)
    first = list(source(0))
    assert len(first) == len(lines)
    assert [type(item).__name__ for item in source(3)] == ["dict", "dict"]
    assert [item["messages"][1]["content"][0]["text"] for item in source(3)] == ["answer 1", "answer 2"]
