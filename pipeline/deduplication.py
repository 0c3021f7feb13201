"""Out-of-core de-duplication: accepted rows spilled to disk in hash partitions of their key tuple, then merged
one partition at a time, so memory is bounded by a partition, not by the input.

Rows are fixed-size records (one int64 code per axis, the value, the time when the rule uses it, and the row's
sequence number in read order). All rows of one key tuple land in the same partition, so merging partitions
independently gives the same entries as merging everything at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hyperlearn.pipeline.spec import Duplicates

RECORD_SORT_FACTOR = 4  # a loaded partition costs about this many times its bytes while it is merged


def record_dtype(order: int, with_time: bool) -> np.dtype:
    """The spilled record of a relation of `order` axes."""
    fields = [(f"code_{axis}", np.int64) for axis in range(order)] + [("value", np.float64)]
    if with_time:
        fields.append(("time", np.float64))
    return np.dtype(fields + [("sequence", np.int64)])


def partition_count(estimated_rows: int, dtype: np.dtype, memory_limit: int) -> int:
    """How many partitions keep one partition's merge within half of `memory_limit` (at most 2**16)."""
    return min(2**16, max(1, math.ceil(estimated_rows * dtype.itemsize * RECORD_SORT_FACTOR / (memory_limit / 2))))


class PartitionedRows:
    """Accepted rows of one relation source, appended batch by batch into `partitions` files under `directory`."""

    def __init__(self, directory: Path, order: int, with_time: bool, partitions: int) -> None:
        self.dtype = record_dtype(order, with_time)
        self.order = order
        self.paths = [Path(directory) / f"part-{index}.bin" for index in range(partitions)]
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._files = [open(path, "wb") for path in self.paths]
        self.rows = 0

    def append(self, codes: list[np.ndarray], values: np.ndarray, times: np.ndarray | None) -> None:
        """Add rows (codes per axis, values, times or None), numbered after the rows added before."""
        sequence = np.arange(self.rows, self.rows + len(values), dtype=np.int64)
        self.rows += len(values)
        order = None
        if len(self.paths) > 1:
            partition = partition_of(codes, len(self.paths)).astype(np.uint16)
            order = np.argsort(partition, kind="stable")  # a radix sort for 16-bit integers
            bounds = np.searchsorted(partition[order], np.arange(len(self.paths) + 1))
        columns = [*codes, values] + ([times] if times is not None else []) + [sequence]
        records = np.empty(len(values), dtype=self.dtype)
        for name, column in zip(self.dtype.names, columns):
            records[name] = column if order is None else column[order]
        if order is None:
            records.tofile(self._files[0])
            return
        for index, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            if end > start:
                records[start:end].tofile(self._files[index])

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def partitions(self) -> Iterator[np.ndarray]:
        """The records of each partition, one loaded at a time."""
        self.close()
        for path in self.paths:
            yield np.fromfile(path, dtype=self.dtype)


def partition_of(codes: list[np.ndarray], partitions: int) -> np.ndarray:
    """The partition of each key tuple: a multiplicative (Fibonacci) hash of its codes, modulo `partitions`."""
    mixed = np.zeros(len(codes[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for axis_codes in codes:
            mixed = (mixed ^ axis_codes.astype(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def merge_duplicates(
    records: np.ndarray, order: int, rule: Duplicates, sizes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """One entry per key tuple: (codes (order, entries) int64, values float64), in key order; `sizes` bound
    the codes of each axis.

    first / last: the earliest / latest row by time when records have one, else by sequence (ties on time go
    by sequence). mean / sum / max: aggregate the values, in sequence order.
    """
    if not len(records):
        return np.empty((order, 0), dtype=np.int64), np.empty(0, dtype=np.float64)
    codes = [records[f"code_{axis}"] for axis in range(order)]
    keys = sort_keys(codes, sizes)
    permutation = np.argsort(keys)  # ties are put in (time,) sequence order below
    keys = keys[permutation]
    new_group = np.ones(len(records), dtype=bool)
    new_group[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(new_group)
    group_sizes = np.diff(np.append(starts, len(records)))
    if len(starts) < len(records):  # order each repeated key tuple's rows by (time,) sequence
        group = np.cumsum(new_group) - 1
        repeated = np.flatnonzero(group_sizes[group] > 1)
        tie_breaks = [records["sequence"][permutation[repeated]]]
        if "time" in records.dtype.names and rule in ("first", "last"):
            tie_breaks.append(records["time"][permutation[repeated]])
        permutation[repeated] = permutation[repeated][np.lexsort([*tie_breaks, group[repeated]])]
    values = records["value"][permutation]
    chosen = permutation[starts]
    entry_codes = np.stack([axis_codes[chosen] for axis_codes in codes])
    if rule == "first":
        return entry_codes, values[starts]
    if rule == "last":
        return entry_codes, values[starts + group_sizes - 1]
    if rule == "max":
        return entry_codes, np.maximum.reduceat(values, starts)
    sums = np.add.reduceat(values, starts)
    return entry_codes, sums / group_sizes if rule == "mean" else sums


def sort_keys(codes: list[np.ndarray] | np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """One sort key per key tuple that orders tuples lexicographically (axis 0 first): the int64 linear index
    when the sizes' product fits, else the rank of each tuple among the distinct tuples."""
    if math.prod(sizes) < 2**63:
        linear = np.zeros(len(codes[0]), dtype=np.int64)
        for axis_codes, size in zip(codes, sizes):
            linear = linear * np.int64(size) + axis_codes
        return linear
    return np.unique(np.stack(codes), axis=1, return_inverse=True)[1].ravel()


def key_order(codes: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """The permutation that sorts key tuples (columns of `codes`) lexicographically."""
    return np.argsort(sort_keys(codes, sizes), kind="stable")
