"""Array-module dispatch: NumPy on the CPU, CuPy on a CUDA GPU, chosen once from a resolved device.

The graph maths (hyperlearn.graphs) is written once against the NumPy API and runs on the module `array_module`
yields, so the CPU path that the tests and CI run is the very code a GPU runs. CuPy (the `gpu` extra) is imported
only when the GPU is asked for, and the device memory its pool cached is handed back when the block ends: the
process that builds graphs also drives trainers that may share that GPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any

import numpy as np


@contextmanager
def array_module(device: str) -> Iterator[ModuleType]:
    """NumPy for "cpu", CuPy for "cuda" (the current CUDA device, i.e. the first one CUDA_VISIBLE_DEVICES names).

    `device` must be resolved ("auto" is decided by the caller, once). With CuPy, the blocks its default memory
    pool holds are freed on leaving, so graph building leaves no device memory behind.
    """
    if device == "cpu":
        yield np
        return
    if device != "cuda":
        raise ValueError(f"device must be 'cpu' or 'cuda' (resolved), got {device!r}")
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError("building graphs on 'cuda' needs CuPy: pip install 'hyperlearn[gpu]'") from error
    try:
        yield cupy
    finally:
        # Where CUDA itself failed (no driver, no device) the pool holds nothing, and freeing it would raise
        # the same error again over the one the block raised.
        with suppress(cupy.cuda.runtime.CUDARuntimeError):
            cupy.get_default_memory_pool().free_all_blocks()


def cupy_installed() -> bool:
    """Whether CuPy can be imported here (without importing it: that loads CUDA libraries)."""
    return importlib.util.find_spec("cupy") is not None


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array on the host from a NumPy or CuPy array (CuPy's arrays copy themselves over with `get`)."""
    return array.get() if hasattr(array, "__cuda_array_interface__") else np.asarray(array)
