"""The package's layers, checked in fresh interpreters: what each part may not load, and what the wheel installs.

hyperlearn (the method) is a leaf library: it never loads Prefect or the pipeline and flows packages.
hyperlearn.pipeline (data in and out) never loads torch or Prefect. The command line's entry module loads
neither torch, Dask nor Prefect, so `hyperlearn --help` stays instant.
"""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hyperlearn
import hyperlearn.pipeline

ROOT = Path(__file__).resolve().parents[1]


def _modules(package, excluding: tuple[str, ...] = ()) -> list[str]:
    """Every module of `package` (recursively), less those under the `excluding` prefixes."""
    prefix = f"{package.__name__}."
    return sorted(
        info.name for info in pkgutil.walk_packages(package.__path__, prefix=prefix) if not info.name.startswith(excluding)
    )


def _loaded_after_importing(modules: list[str]) -> set[str]:
    """Top-level and hyperlearn.* module names present after importing `modules` in a fresh interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    names = json.loads(output)
    return {name.split(".")[0] for name in names} | {name for name in names if name.startswith("hyperlearn.")}


def _forbidden(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded if name in forbidden or name.startswith(tuple(f"{f}." for f in forbidden)))


def test_the_method_library_loads_no_prefect_pipeline_or_flows():
    modules = _modules(hyperlearn, excluding=("hyperlearn.pipeline", "hyperlearn.flows"))
    assert "hyperlearn.trainer" in modules and "hyperlearn.rundir" in modules
    loaded = _loaded_after_importing(modules)
    assert _forbidden(loaded, ("prefect", "hyperlearn.pipeline", "hyperlearn.flows")) == []


def test_the_pipeline_loads_no_torch_or_prefect():
    modules = _modules(hyperlearn.pipeline)
    assert "hyperlearn.pipeline.ingest" in modules and "hyperlearn.pipeline.outputs" in modules
    loaded = _loaded_after_importing(modules)
    assert _forbidden(loaded, ("torch", "prefect", "hyperlearn.flows")) == []


def test_the_command_line_entry_loads_nothing_heavy():
    loaded = _loaded_after_importing(["hyperlearn.flows.cli"])
    assert _forbidden(loaded, ("torch", "prefect", "dask", "distributed")) == []


def test_the_training_flow_loads_no_dask_dataframe_or_numba():
    """Side data is read with pandas: Dask's DataFrame would bring dask.array, pydata sparse and numba into every
    run's start (0.4 s of imports)."""
    loaded = _loaded_after_importing(["hyperlearn.flows.hyperlearn_flow"])
    assert "prefect" in loaded and "distributed" in loaded
    assert _forbidden(loaded, ("numba", "sparse")) == []


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_import_package(tmp_path):
    """Built from a copy of the sources, so the build leaves nothing behind in the checkout."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "out", "data", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("hyperlearn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"hyperlearn"}
    for module in ("hyperlearn/trainer.py", "hyperlearn/pipeline/ingest.py", "hyperlearn/pipeline/sources/synthetic.py",
                   "hyperlearn/flows/cli.py"):
        assert module in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "hyperlearn = hyperlearn.flows.cli:run_command" in zipfile.ZipFile(wheel).read(entry_points).decode()
