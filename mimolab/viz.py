"""Plots the notebooks and reports share: a live loss curve and score-vs-chance bars. Notebooks draw
with pyplot; the report passes its own ``Figure`` axes (``ax=``), so no figure stays open."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from mimolab.eval.results import TaskScore


class LiveLoss:
    """A training callback that redraws the loss curve in place (in a notebook) every ``every`` steps;
    outside a notebook it only collects the records."""

    def __init__(self, title: str = "training loss", every: int = 10, keys: tuple[str, ...] = ("loss",)) -> None:
        self.title, self.every, self.keys = title, every, keys
        self.records: list[dict] = []
        self._handle = None

    def __call__(self, record: dict) -> None:
        self.records.append(record)
        if len(self.records) % self.every == 0:
            self.draw()

    def figure(self):
        fig, ax = plt.subplots(figsize=(7, 3))
        for key in self.keys:
            points = [(r["step"], r[key]) for r in self.records if key in r]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key)
        ax.set(xlabel="step", ylabel="loss", title=self.title, yscale="log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def draw(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None or not self.records:
            return
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)


def plot_scores(rows: list[TaskScore], ax=None, title: str = "held-out score and measured chance"):
    """Bars of each task's score (95% interval) with its chance level as a black tick."""
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows) + 2), 3.2))
    x = list(range(len(rows)))
    ax.bar(x, [r.score for r in rows], yerr=[1.96 * r.stderr for r in rows], color="tab:blue", label="model")
    ax.scatter(x, [r.chance for r in rows], color="black", marker="_", s=400, zorder=3, label="chance")
    ax.set_xticks(x, [r.task for r in rows], rotation=30, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="score", title=title)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def show_examples(rows: list[dict], width: int = 38):
    """Images in a row, each titled with the prompt, the model's reply, the reference and the score."""
    import textwrap

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 4.2), squeeze=False)
    for ax, row in zip(axes[0], rows):
        if row["image"] is not None:
            ax.imshow(row["image"])
        ax.axis("off")
        text = (f"Q: {row['prompt'][-80:]}\nmodel: {row['reply'][:120]}\nreference: {row['reference'][:120]}\n"
                f"score {row['score']:.2f}")
        ax.set_title("\n".join(textwrap.fill(line, width) for line in text.splitlines()), fontsize=7, loc="left")
    fig.tight_layout()
    return fig
