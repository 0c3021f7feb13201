"""What the docker/ tests read: the compose file as Docker Compose would see it, and the Dockerfile's instructions.

No Docker engine runs on the test machines, so the files are read the way the engine would read them: the
compose file with its `${VAR:-default}` variables interpolated (compose-spec 12-interpolation.md), the Dockerfile
as a list of (instruction, arguments) with continuation lines joined.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"

#: `$$`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}`, `${NAME:+other}`,
#: `${NAME+other}`, `$NAME`.
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}|(?P<bare>\w+))")


class MissingVariable(KeyError):
    """A `${NAME:?message}` variable that the environment does not set."""


def interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    """`value` (a loaded compose document or any part of it) with every variable in its strings replaced, as
    Compose does before it validates the file. Raises MissingVariable for a required variable left unset."""
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        operator, argument = match["operator"] or "", match["argument"] or ""
        is_set = name in environment and (environment[name] != "" or not operator.startswith(":"))
        if operator.endswith("-"):
            return environment[name] if is_set else argument
        if operator.endswith("?"):
            if not is_set:
                raise MissingVariable(f"{name}: {argument}")
            return environment[name]
        if operator.endswith("+"):
            return argument if is_set else ""
        return environment.get(name, "")

    return _VARIABLE.sub(replace, value)


def load_compose(environment: Mapping[str, str]) -> dict[str, Any]:
    """docker/compose.yaml, interpolated with `environment`."""
    return interpolate(yaml.safe_load((DOCKER / "compose.yaml").read_text()), environment)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order, as (INSTRUCTION, arguments): comments dropped, continuations
    joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    for line in logical:
        instruction, _, arguments = line.strip().partition(" ")
        instructions.append((instruction.upper(), " ".join(arguments.split())))
    return instructions


#: The environment a first `docker compose up` has: only the password docker/README.md asks for.
MINIMAL_ENVIRONMENT = {"POSTGRES_PASSWORD": "a-test-password"}
