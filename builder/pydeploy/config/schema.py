"""The JSON Schema of `[tool.pydeploy]`, generated from the pydantic models.

`schema/pydeploy.schema.json` is committed and shipped in the wheel; `pydeploy schema
--check` (run by the test suite) fails when the models and the file disagree. The same
schema is registered with validate-pyproject through its `tool_schema` entry point.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydeploy.config.models import PydeployConfig

SCHEMA_ID = "https://pydeploy.dev/schema/pydeploy.schema.json"
SCHEMA_FILE = "pydeploy.schema.json"


def generate() -> dict[str, Any]:
    schema = PydeployConfig.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        **schema,
        "title": "[tool.pydeploy]",
        "description": "pydeploy's configuration table in pyproject.toml.",
    }


def render() -> str:
    """Stable text: sorted keys, two-space indent, trailing newline (diff-friendly)."""
    return json.dumps(generate(), indent=2, sort_keys=True) + "\n"


def repo_schema_path(start: Path) -> Path | None:
    """`schema/pydeploy.schema.json` of the source checkout containing `start`."""
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / "schema" / SCHEMA_FILE
        if candidate.is_file() or (directory / "builder" / "pydeploy").is_dir():
            return candidate
    return None


def validate_pyproject_schema(tool_name: str) -> dict[str, Any]:
    """validate-pyproject plugin: the schema for `[tool.<tool_name>]`.

    Reads the copy shipped in the wheel; a source checkout falls back to generating it
    (identical, as the drift test guarantees)."""
    del tool_name
    shipped = resources.files("pydeploy").joinpath(SCHEMA_FILE)
    if shipped.is_file():
        loaded: dict[str, Any] = json.loads(shipped.read_text(encoding="utf-8"))
        return loaded
    return generate()
