"""The interactive image demo of notebook 12: ask a checkpoint about an image, with thinking on or off;
the answer streams in, its thinking shown apart, and the boxes and clicks it names drawn over the image.

The pieces work without a browser (the tests drive them): ``find_marks`` reads boxes and points from
an answer with the evaluation's parsers (``mimolab.eval.answers``: Qwen2.5-VL's JSON ``bbox_2d`` /
``point_2d``, its ``(x1,y1),(x2,y2)`` box text, GUI ``click(x, y)``), so the overlay shows what the
evaluation scores; ``draw_marks`` draws them at the image's scale (the model answers in pixels of the
image *as the processor resized it*); ``ask`` streams a reply; ``ImageDemo`` is the ipywidgets app.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from mimolab.eval.answers import final_answer, parse_box_text, parse_boxes, parse_click, parse_json_list
from mimolab.model.checkpoint import CheckpointError, check_tokenizer, read_config
from mimolab.processing import resized_size
from mimolab.settings import runs_root
from mimolab.tokenizer import split_thinking

SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"  # the repository's committed samples
COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4")


@dataclass
class Mark:
    kind: str  # "box" or "point"
    xy: tuple[float, ...]  # x1, y1, x2, y2 or x, y, in the pixels of the image the model saw
    label: str = ""


def find_marks(answer: str) -> list[Mark]:
    """The boxes and points of an answer, as the evaluation reads them: every box ``parse_boxes`` finds
    (labelled by its JSON object's ``label`` or ``text``), Qwen2-VL box text, JSON ``point_2d`` points,
    and the ``click(x, y)`` a GUI reply is scored on."""
    items = parse_json_list(answer)
    labels = {tuple(box): label for box, label in parse_box_text(answer)}
    labels.update({tuple(float(v) for v in item["bbox_2d"]): _label(item)
                   for item in items if _numbers(item.get("bbox_2d"), 4)})
    marks = [Mark("box", tuple(box), labels.get(tuple(box), "")) for box in parse_boxes(answer)]
    marks += [Mark("point", tuple(float(v) for v in item["point_2d"]), _label(item))
              for item in items if _numbers(item.get("point_2d"), 2)]
    click = parse_click(answer)
    return marks + [Mark("point", click, "click")] if click else marks


def _label(item: dict) -> str:
    return str(item.get("label", item.get("text", "")))


def _numbers(value, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(isinstance(v, (int, float)) for v in value)


def draw_marks(image: Image.Image, marks: list[Mark], view_size: tuple[int, int] | None = None) -> Image.Image:
    """A copy of ``image`` with each mark drawn, scaled from ``view_size`` (what the model saw) to the image."""
    out = image.convert("RGB").copy()
    sx, sy = (out.width / view_size[0], out.height / view_size[1]) if view_size else (1.0, 1.0)
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 100))
    for i, mark in enumerate(marks):
        color = COLORS[i % len(COLORS)]
        if mark.kind == "box":
            x1, y1, x2, y2 = mark.xy[0] * sx, mark.xy[1] * sy, mark.xy[2] * sx, mark.xy[3] * sy
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=color, width=width)
            anchor = (min(x1, x2), max(0, min(y1, y2) - 12))
        else:
            x, y = mark.xy[0] * sx, mark.xy[1] * sy
            r = 3 * width
            draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=width)
            draw.line([x - 2 * r, y, x + 2 * r, y], fill=color, width=1)
            draw.line([x, y - 2 * r, x, y + 2 * r], fill=color, width=1)
            anchor = (x + r, max(0, y - r - 12))
        if mark.label:
            box = draw.textbbox(anchor, mark.label)
            draw.rectangle(box, fill=color)
            draw.text(anchor, mark.label, fill="white")
    return out


# ------------------------------------------------------------------------------------ checkpoints
def latest_checkpoint(root: str | Path | None = None) -> Path | None:
    """The newest model directory (config.json and a tokenizer beside it) under ``root`` (default
    ``$MIMOLAB_RUNS``, else the repository's ``runs/``): the last pipeline stage's ``final``, say."""
    root = Path(root) if root else runs_root()
    if not root.is_dir():
        return None
    found = [p.parent for p in root.rglob("config.json") if (p.parent / "tokenizer.json").exists()]
    return max(found, key=lambda p: (p / "config.json").stat().st_mtime) if found else None


def load_checkpoint(path: str | Path, progress=None, quantize: str | None = None):
    """(model, processor) from a directory; ``progress(fraction, message)`` as it goes; ``quantize``: "int8" (or
    "int4" / "nf4" on a GPU) for the language model's linear layers (``mimolab.model.quantize``). Raises
    ``CheckpointError`` naming what is missing, broken, or does not match (a tokenizer whose ids the
    model cannot take: ``mimolab.model.checkpoint.check_tokenizer``), before any weight is read."""
    from mimolab.model.vlm import MiMoVL
    from mimolab.processing import MiMoVLProcessor

    path = Path(path).expanduser()
    say = progress or (lambda fraction, message: None)
    if path.suffix == ".safetensors" or path.is_file():
        raise CheckpointError(f"{path} is a file: give the checkpoint directory that holds it, {path.parent}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory")
    missing = [f for f in ("config.json", "tokenizer.json") if not (path / f).exists()]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors (the weights)")
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint: it has no {', '.join(missing)}")
    say(0.1, "reading the config and the processor")
    try:
        processor = MiMoVLProcessor.from_pretrained(path)
        config = read_config(path)
    except Exception as err:  # a broken file: say which directory and why, not a deep stack trace
        raise CheckpointError(f"{path} could not be loaded: {type(err).__name__}: {err}") from err
    check_tokenizer(config, processor.tokenizer, path)
    say(0.2, "reading the weights")
    try:
        model = MiMoVL.from_pretrained(path, quantize=quantize).eval()
    except Exception as err:
        raise CheckpointError(f"{path} could not be loaded: {type(err).__name__}: {err}") from err
    say(1.0, f"loaded {path} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    return model, processor


def sample_images(root: str | Path = SAMPLES) -> dict[str, Path]:
    """The committed sample images by name (``caption-000000.png``...), for the picker."""
    folder = Path(root) / "images"
    return {p.name: p for p in sorted(folder.glob("*.png"))}


def ask(model, processor, image: Image.Image, question: str, *, think: bool = True, temperature: float = 0.0,
        top_p: float = 1.0, max_new_tokens: int = 128, seed: int = 0) -> Iterator[str]:
    """Stream the reply to ``question`` about ``image`` piece by piece (greedy at temperature 0)."""
    from mimolab.model.generation import stream

    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, enable_thinking=think)
    inputs = processor([text], images=[image])
    inputs.pop("mm_token_type_ids", None)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    yield from stream(model, inputs.pop("input_ids"), inputs.pop("attention_mask"), tokenizer=processor.tokenizer,
                      do_sample=temperature > 0, temperature=max(temperature, 1e-6), top_p=top_p,
                      max_new_tokens=max_new_tokens, seed=seed, **inputs)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------ the widget app
class ImageDemo:
    """The ipywidgets app: checkpoint selector, image picker and upload, question, thinking toggle,
    sampling controls; the answer streams into the page and the overlay redraws at the end."""

    def __init__(self, checkpoint: str | Path | None = None, samples: str | Path = SAMPLES,
                 quantize: str | None = None) -> None:
        import ipywidgets as w

        self.quantize = quantize  # passed to load_checkpoint
        self.model = self.processor = None
        self.image: Image.Image | None = None
        self.reply = ""
        self.images = sample_images(samples)
        found = checkpoint or latest_checkpoint()
        self.checkpoint = w.Text(value=str(found or ""), description="checkpoint", layout=w.Layout(width="70%"))
        self.load_button = w.Button(description="Load", icon="folder-open")
        self.loading = w.FloatProgress(value=0, min=0, max=1, layout=w.Layout(width="30%"))
        self.status = w.HTML()
        self.picker = w.Dropdown(options=list(self.images), description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.question = w.Textarea(value="Describe the image.", description="question", layout=w.Layout(width="70%"))
        self.think = w.ToggleButton(value=False, description="thinking", icon="lightbulb-o",
                                    tooltip="on: the model thinks first; off: /no_think (an empty think block)")
        self.temperature = w.FloatSlider(value=0.0, min=0.0, max=1.5, step=0.05, description="temperature")
        self.top_p = w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p")
        self.max_tokens = w.IntSlider(value=128, min=8, max=1024, step=8, description="max tokens")
        self.ask_button = w.Button(description="Ask", button_style="primary", icon="paper-plane")
        self.thinking = w.HTML(layout=w.Layout(border="1px dashed #bbb", padding="4px"))
        self.answer = w.HTML(layout=w.Layout(padding="4px"))
        self.overlay = w.Image(format="png", layout=w.Layout(width="360px"))  # small world images, shown larger
        self.load_button.on_click(lambda _: self.load())
        self.picker.observe(lambda change: self.set_image(Image.open(self.images[change["new"]])), names="value")
        self.upload.observe(lambda change: self._uploaded(change["new"]), names="value")
        self.ask_button.on_click(lambda _: self.on_ask())
        if self.images:
            self.set_image(Image.open(self.images[self.picker.value]))

    @property
    def widget(self):
        import ipywidgets as w

        return w.VBox([w.HBox([self.checkpoint, self.load_button]), w.HBox([self.loading, self.status]),
                       w.HBox([self.picker, self.upload]), self.question,
                       w.HBox([self.think, self.temperature, self.top_p, self.max_tokens]), self.ask_button,
                       w.HBox([self.overlay, w.VBox([w.HTML("<b>thinking</b>"), self.thinking,
                                                     w.HTML("<b>answer</b>"), self.answer])])])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def load(self, path: str | Path | None = None) -> bool:
        path = path or self.checkpoint.value.strip()
        if not path:
            self.status.value = "<span style='color:#b00'>no checkpoint found: run the pipeline or give a path</span>"
            return False
        self.checkpoint.value = str(path)

        def progress(fraction: float, message: str) -> None:
            self.loading.value, self.status.value = fraction, message

        try:
            self.model, self.processor = load_checkpoint(path, progress, self.quantize)
        except CheckpointError as err:
            self.model = self.processor = None
            self.loading.value = 0
            self.status.value = f"<span style='color:#b00'>{err}</span>"
            return False
        return True

    def set_image(self, image: Image.Image) -> None:
        self.image = image.convert("RGB")
        self.overlay.value = png_bytes(self.image)

    def _uploaded(self, value) -> None:
        files = list(value.values()) if isinstance(value, dict) else list(value)  # ipywidgets 7 / 8
        if files:
            self.set_image(Image.open(io.BytesIO(bytes(files[-1]["content"]))))

    def on_ask(self) -> str:
        """Stream the answer into the page, then draw its boxes and points; returns the reply."""
        import html

        if self.model is None and not self.load():
            return ""
        self.reply, self.thinking.value, self.answer.value = "", "", "<i>…</i>"
        pieces = ask(self.model, self.processor, self.image, self.question.value, think=self.think.value,
                     temperature=self.temperature.value, top_p=self.top_p.value, max_new_tokens=self.max_tokens.value)
        for piece in pieces:
            self.reply += piece
            thinking, answer = split_thinking(self.reply)
            if "<think>" in self.reply and "</think>" not in self.reply:
                thinking, answer = self.reply.split("<think>", 1)[1], ""
            self.thinking.value = html.escape(thinking).replace("\n", "<br>")
            self.answer.value = f"<span class='mimolab-answer'>{html.escape(answer)}</span>"
        marks = find_marks(final_answer(self.reply))  # the answer the evaluation would score
        self.overlay.value = png_bytes(draw_marks(self.image, marks, resized_size(self.image, self.processor.image_processor)))
        self.status.value = f"{len(marks)} mark(s) drawn" if marks else "no boxes or points in the answer"
        return self.reply


__all__ = ["CheckpointError", "ImageDemo", "Mark", "ask", "draw_marks", "find_marks", "latest_checkpoint",
           "load_checkpoint", "sample_images"]
