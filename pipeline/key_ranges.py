"""Out-of-core ordering of a split's entries: entries spilled to disk grouped by key range, then written in
lexicographic order one range at a time, so memory is bounded by a range, not by the split.

Each spilled chunk (one de-duplicated partition's entries of the split) is a run of fixed-size records
(a catalog id per axis, the float32 value) grouped by fine key range, with a histogram of how many records
each fine range holds. The fine ranges cut the key space (the linear index over the leading axes whose
product fits in int64) into RANGES equal widths; consecutive fine ranges are then gathered into coarse
ranges holding at most a budget of entries, read back from every run (contiguous slices, found from the
histograms), sorted and handed to the writer. Entries of a split are distinct key tuples, so any grouping
sorts to the same order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hyperlearn.pipeline.deduplication import RECORD_SORT_FACTOR, key_order

RANGES = 2**14  # fine key ranges; a run's histogram is RANGES int64 counts


def entry_dtype(order: int) -> np.dtype:
    """A spilled entry of a relation of `order` axes: its catalog id per axis and its value."""
    return np.dtype([(f"id_{axis}", np.int64) for axis in range(order)] + [("value", np.float32)])


def range_budget(order: int, memory_limit: int) -> int:
    """How many entries one coarse range may hold so that sorting it stays within half of `memory_limit`."""
    return max(1, int(memory_limit / 2 / (entry_dtype(order).itemsize * RECORD_SORT_FACTOR)))


class RangeSpill:
    """The entries of one split of a relation (shape `shape`), spilled to `path` run by run."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = entry_dtype(len(shape))
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w+b")
        self._leading, space = _leading_axes(self.shape)
        self._width = max(1, math.ceil(space / RANGES))
        self._runs: list[tuple[int, np.ndarray]] = []  # (first record, records per fine range)
        self.entries = 0

    def append(self, coords: np.ndarray, values: np.ndarray) -> None:
        """Spill one run: coords (order, n) catalog ids, values (n,)."""
        if not len(values):
            return
        fine = self._fine_ranges(coords)
        grouping = np.argsort(fine, kind="stable")
        records = np.empty(len(values), dtype=self.dtype)
        for axis, axis_coords in enumerate(coords):
            records[f"id_{axis}"] = axis_coords[grouping]
        records["value"] = values[grouping]
        records.tofile(self._file)
        self._runs.append((self.entries, np.bincount(fine, minlength=RANGES)))
        self.entries += len(values)

    def sorted_chunks(self, budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The split's entries in lexicographic order of their coordinates, as (coords (order, n) int64,
        values (n,) float32) chunks of about `budget` entries (more only when one fine range holds more)."""
        self._file.flush()
        if not self._runs:
            return
        ends = np.stack([np.cumsum(counts) for _, counts in self._runs])  # per run, records up to each range
        for first, last in _coarse_ranges(ends, budget):
            pieces = []
            for (start, _), run_ends in zip(self._runs, ends):
                begin = run_ends[first - 1] if first else 0
                count = int(run_ends[last - 1] - begin)
                if count:
                    self._file.seek((start + int(begin)) * self.dtype.itemsize)
                    pieces.append(np.fromfile(self._file, dtype=self.dtype, count=count))
            records = np.concatenate(pieces)
            pieces.clear()
            coords = np.stack([records[f"id_{axis}"] for axis in range(len(self.shape))])
            permutation = key_order(coords, self.shape)
            yield np.take(coords, permutation, axis=1), records["value"][permutation]

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def _fine_ranges(self, coords: np.ndarray) -> np.ndarray:
        linear = np.zeros(coords.shape[1], dtype=np.int64)
        for axis in range(self._leading):
            linear = linear * np.int64(self.shape[axis]) + coords[axis]
        return linear // np.int64(self._width)


def _leading_axes(shape: tuple[int, ...]) -> tuple[int, int]:
    """How many leading axes' linear index fits in int64 (at least one), and the size of that key space."""
    space, leading = 1, 0
    for size in shape:
        if leading and space * size >= 2**63:
            break
        space, leading = space * size, leading + 1
    return leading, space


def _coarse_ranges(ends: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive fine ranges [first, last) grouped so that each group holds at most `budget` records over all
    runs (a single fine range may hold more); `ends` are the runs' cumulative counts per fine range."""
    cumulative = ends.sum(axis=0)
    groups, first, taken = [], 0, 0
    while first < len(cumulative):
        last = int(np.searchsorted(cumulative, taken + budget, side="right"))
        last = max(last, first + 1)
        groups.append((first, last))
        taken, first = int(cumulative[last - 1]), last
    return [(a, b) for a, b in groups if cumulative[b - 1] > (cumulative[a - 1] if a else 0)]
