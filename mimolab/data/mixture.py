"""A streaming mixture of data sources by *token* share, with a resumable position.

Each source is an iterator factory ``start -> iterator of records`` (a synthetic task generator,
a JSONL file...), so nothing has to fit in memory and a restarted job can skip straight to the
next unseen record. At every step the sampler takes the source furthest below its target share of
tokens so far (deterministic, no sampling noise), tokenises the record, and yields it. Records the
tokeniser rejects (``BadRecord``), and items a source yields as a ``BadRecord`` (a line it could not
read), are skipped, counted per reason and logged, never fatal.

``state_dict()`` / ``load_state_dict()`` hold how many records each source has consumed and how
many tokens it has contributed: restoring them continues exactly where the stream stopped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class BadRecord(Exception):
    """A record that cannot be used; ``reason`` is a short category used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SkipCounter:
    """Counts skipped records per reason; logs the first few of each reason in full."""

    def __init__(self, log_first: int = 3) -> None:
        self.counts: Counter[str] = Counter()
        self.log_first = log_first

    def skip(self, source: str, err: BadRecord) -> None:
        self.counts[err.reason] += 1
        if self.counts[err.reason] <= self.log_first:
            log.warning("skipped a record from %s: %s", source, err)

    def summary(self) -> str:
        if not self.counts:
            return "no records skipped"
        return "skipped records: " + ", ".join(f"{reason} x{n}" for reason, n in self.counts.most_common())


class MixtureSampler:
    def __init__(self, sources: dict[str, Callable[[int], Iterator[Any]]], shares: dict[str, float],
                 tokenize: Callable[[Any, str], Any], *, max_consecutive_skips: int = 1000) -> None:
        missing = set(shares) - set(sources)
        if missing:
            raise ValueError(f"shares name sources that do not exist: {sorted(missing)}")
        total = sum(v for v in shares.values() if v > 0)
        if total <= 0:
            raise ValueError("token shares must include at least one positive value")
        self.shares = {k: v / total for k, v in shares.items() if v > 0}
        self.sources, self.tokenize = sources, tokenize
        self.consumed = {k: 0 for k in self.shares}
        self.tokens = {k: 0 for k in self.shares}
        self.skips = SkipCounter()
        self.max_consecutive_skips = max_consecutive_skips
        self._iters: dict[str, Iterator[Any]] = {}

    def state_dict(self) -> dict:
        return {"consumed": dict(self.consumed), "tokens": dict(self.tokens), "skips": dict(self.skips.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.consumed.update(state["consumed"])
        self.tokens.update(state["tokens"])
        self.skips.counts = Counter(state.get("skips", {}))
        self._iters = {}  # reopened lazily at the restored positions

    def token_shares(self) -> dict[str, float]:
        total = max(1, sum(self.tokens.values()))
        return {k: v / total for k, v in self.tokens.items()}

    def _next_source(self) -> str:
        total = sum(self.tokens.values())
        return max(self.shares, key=lambda k: (self.shares[k] * total - self.tokens[k], self.shares[k]))

    def _next_record(self, name: str) -> Any:
        if name not in self._iters:
            self._iters[name] = self.sources[name](self.consumed[name])
        record = next(self._iters[name])  # StopIteration: the source is exhausted
        self.consumed[name] += 1
        return record

    def __iter__(self) -> Iterator[Any]:
        skipped_in_a_row = 0
        while self.shares:
            name = self._next_source()
            try:
                record = self._next_record(name)
            except StopIteration:
                log.info("source %s is exhausted", name)
                self.shares.pop(name)
                continue
            try:
                if isinstance(record, BadRecord):  # a source's item it could not read (a bad JSONL line)
                    raise record
                sample = self.tokenize(record, name)
            except BadRecord as err:
                self.skips.skip(name, err)
                skipped_in_a_row += 1
                if skipped_in_a_row >= self.max_consecutive_skips:
                    raise RuntimeError(f"{skipped_in_a_row} bad records in a row; {self.skips.summary()}") from err
                continue
            skipped_in_a_row = 0
            self.tokens[name] += len(sample)
            yield sample
