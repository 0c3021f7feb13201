"""The image's install step, run without Docker: the files docker/Dockerfile copies, installed by the same
docker/install.sh line into a clean virtual environment, give a working `hyperlearn` command.

The install runs with `--no-deps` (the dependencies are gigabytes, and the test machines install offline); the
installed command then borrows this environment's dependencies through a .pth file appended after the new
environment's own site-packages, so the `hyperlearn` package it imports is the freshly installed one (every
command runs outside the checkout, whose folders would otherwise shadow it).
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.docker.docker_files import DOCKER, ROOT, dockerfile_instructions

INSTRUCTIONS = dockerfile_instructions(DOCKER / "Dockerfile")


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY instruction, sources relative to the build context."""
    copies = []
    for instruction, arguments in INSTRUCTIONS:
        if instruction == "COPY":
            *sources, destination = shlex.split(arguments)
            copies.append((sources, destination))
    return copies


def _install_command() -> list[str]:
    """`sh docker/install.sh SOURCE VENV EXTRAS` as the Dockerfile's RUN line gives it."""
    for instruction, arguments in INSTRUCTIONS:
        if instruction == "RUN" and "install.sh" in arguments:
            return shlex.split(arguments.split("&&")[0])
    raise AssertionError("no RUN line of docker/Dockerfile calls install.sh")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            ignored = not negated
    return ignored


def test_the_build_context_holds_every_file_the_dockerfile_copies():
    patterns = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [source for sources, _ in _copies() for source in sources]
    assert "pyproject.toml" in sources and "hyperlearn" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is copied but left out of the build context"
    assert _ignored(".venv/bin/python", patterns) and _ignored("hyperlearn/__pycache__/x.pyc", patterns)


def test_the_image_copies_what_the_wheel_is_built_from_and_installs_the_gpu_extra():
    shell, script, source, venv, extras = _install_command()
    assert (shell, venv, extras) == ("sh", "/opt/hyperlearn", "gpu")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"], *project["tool"]["setuptools"]["package-dir"].values()}
    staged = set()
    for sources, destination in _copies():
        if destination.startswith(source):
            staged |= {str(Path(destination.removeprefix(source).strip("/")) / Path(s).name)
                       if destination.endswith("/") else destination.removeprefix(source).strip("/") for s in sources}
    assert needed <= staged, f"the image builds the wheel without {sorted(needed - staged)}"
    assert str(Path(script).relative_to(source)) in staged


@pytest.mark.slow
def test_the_install_script_gives_a_working_command_in_a_clean_venv(tmp_path):
    _, script, source, _, extras = _install_command()
    staged = tmp_path / "build-context"
    for sources, destination in _copies():
        if not destination.startswith(source):
            continue
        target = staged / Path(destination).relative_to(source)
        for copied in sources:
            origin = ROOT / copied
            place = target / origin.name if destination.endswith("/") else target
            place.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, place, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, place)
    venv = tmp_path / "venv"

    def run(*command: str | Path) -> str:
        return subprocess.run([str(part) for part in command], check=True, capture_output=True, text=True,
                              cwd=tmp_path).stdout

    run("sh", staged / Path(script).relative_to(source), staged, venv, extras, "--no-deps", "--quiet")
    site_packages = Path(run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                         .strip())
    (metadata,) = site_packages.glob("hyperlearn-*.dist-info")
    assert "Provides-Extra: gpu" in (metadata / "METADATA").read_text()
    assert '"editable": true' not in (metadata / "direct_url.json").read_text()
    assert (site_packages / "hyperlearn" / "pipeline" / "ingest.py").is_file()

    (site_packages / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    help_text = run(venv / "bin" / "hyperlearn", "--help")
    assert "schedule" in help_text and "run" in help_text
    assert '"title"' in run(venv / "bin" / "hyperlearn", "spec-schema")
    imported_from = run(venv / "bin" / "python", "-c", "import hyperlearn.flows.cli as c, hyperlearn.pipeline.spec as s; "
                        "print(c.__file__); print(s.__file__)").split()
    assert all(Path(path).is_relative_to(site_packages) for path in imported_from)
