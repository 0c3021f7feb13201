import numpy as np
import pytest

from hyperlearn.arrays import array_module, to_numpy


def test_the_cpu_is_numpy_and_arrays_come_back_as_they_are():
    with array_module("cpu") as xp:
        assert xp is np
        values = xp.arange(4.0)
    assert to_numpy(values) is values


def test_an_unresolved_or_unknown_device_is_refused():
    for device in ("auto", "tpu"):
        with pytest.raises(ValueError, match="resolved"), array_module(device):
            pass


@pytest.mark.gpu
def test_cuda_is_cupy_and_its_pool_is_emptied_on_leaving():
    cupy = pytest.importorskip("cupy")
    with array_module("cuda") as xp:
        assert xp is cupy
        values = xp.arange(1_000_000.0)
        assert cupy.get_default_memory_pool().used_bytes() > 0
        host = to_numpy(values)
        del values
    assert isinstance(host, np.ndarray) and host[-1] == 999_999.0
    assert cupy.get_default_memory_pool().total_bytes() == 0



def test_where_cuda_fails_its_own_error_comes_out(monkeypatch):
    """Without a usable GPU (here: cupy's arrays raise cudaErrorInsufficientDriver), the error of the block is the
    one raised, not a second one from emptying the pool."""
    cupy = pytest.importorskip("cupy")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA works here")
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="cuda"), array_module("cuda") as xp:
        xp.zeros(1)
