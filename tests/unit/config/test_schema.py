"""The committed JSON Schema: no drift, validates the examples, plugs into validate-pyproject."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from validate_pyproject import api as vp_api
from validate_pyproject import errors as vp_errors

from pydeploy.config import schema
from pydeploy.config.models import read_pyproject

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(
    p.parent
    for p in (ROOT / "examples").rglob("pyproject.toml")
    if "pydeploy" in read_pyproject(p.parent).get("tool", {})
)


def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (ROOT / "schema" / "pydeploy.schema.json").read_text(encoding="utf-8")
    )
    return loaded


def test_schema_check_passes_on_the_committed_file() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", "schema", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_schema_check_detects_drift(tmp_path: Path) -> None:
    stale = tmp_path / "stale.json"
    stale.write_text(schema.render().replace("Port the server", "Port a server"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "pydeploy", "schema", "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "out of date" in proc.stderr


def test_every_key_has_a_description() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"{where}.{name} has no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")

    walk(committed(), "schema")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_schema_validates_examples(example: Path) -> None:
    table = read_pyproject(example)["tool"]["pydeploy"]
    jsonschema.validate(table, committed())


def test_schema_rejects_unknown_and_wrong_values() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"server": {"wrokers": 2}}, committed())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"app": "no-colon"}, committed())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"port": 0}, committed())


def _validator() -> Any:
    # The default Validator loads every installed `validate_pyproject.tool_schema` entry
    # point: this is the path users take, so pydeploy's must be among them.
    return vp_api.Validator()


def test_validate_pyproject_accepts_examples() -> None:
    validator = _validator()
    for example in EXAMPLES:
        validator(read_pyproject(example))


def test_validate_pyproject_rejects_a_bad_table() -> None:
    document = {
        "project": {"name": "demo", "version": "1.0"},
        "tool": {"pydeploy": {"app": "main:app", "server": {"workers": "lots"}}},
    }
    with pytest.raises(vp_errors.ValidationError):
        _validator()(document)


def test_validate_pyproject_cli_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "pyproject.toml"
    bad.write_text(
        '[project]\nname = "demo"\nversion = "1.0"\n[tool.pydeploy]\nport = "http"\n',
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "validate_pyproject", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "tool.pydeploy.port" in proc.stdout + proc.stderr


def test_validate_pyproject_finds_the_entry_point() -> None:
    from importlib.metadata import entry_points

    found = list(entry_points(group="validate_pyproject.tool_schema"))
    assert [ep.name for ep in found].count("pydeploy") == 1
    # Loading it, not just finding the name, catches an entry point left on a moved module.
    (ep,) = (ep for ep in found if ep.name == "pydeploy")
    assert ep.load() is schema.validate_pyproject_schema
