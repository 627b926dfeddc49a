"""Property: whatever pyproject.toml, lock files, .python-version and requirements files
hold, reading a project (config, project metadata, plan, dependency inputs) raises
nothing but pydeploy's own errors, each one short paragraph (the CLI prints it as is).

Generated documents mix the keys pydeploy reads with values of every TOML type, so most
examples reach past the TOML parser into the shape checks and the models. Derandomized
with a bounded number of examples: the same inputs on every run, a few seconds.
"""

from __future__ import annotations

import datetime
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydeploy.config.models import load_config, read_pyproject
from pydeploy.config.project import load_project
from pydeploy.errors import PydeployError
from pydeploy.plan import depinputs
from pydeploy.plan.locks import pylock
from pydeploy.plan.planner import Overrides, make_plan

PROPERTY = settings(
    max_examples=120,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Keys pydeploy reads (and near misses), so that generated tables hit real code paths.
KEYS = [
    "project", "name", "version", "requires-python", "urls", "dependencies", "dynamic",
    "optional-dependencies", "description", "tool", "pydeploy", "uv", "workspace", "members",
    "sources", "path", "app", "python", "tags", "env", "labels", "include", "exclude",
    "server", "type", "workers", "extra-args", "interface", "dependencies", "source",
    "requirements", "index", "url", "healthcheck", "resources", "int", "a[b", "literal['auto']",
    "package", "packages", "directory", "vcs", "archive", "wheels", "sdist", "marker",
    "editable", "build-system", "dependency-groups", "port", "user-id",
]  # fmt: skip
SCALARS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["main:app", "3.12", ">=3.11", "1.0", "Bad Repo:1", "../../x:1", "!",
                     "--bind", "uvicorn", "café", "a\x00b", ".", "uv.lock"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.dates(),
    st.times(),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)


def toml_value(value: Any) -> str:
    """An inline TOML value (the generator's own writer; no TOML writer is a dependency)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)  # JSON strings are TOML basic strings (surrogates aside)
    if isinstance(value, float):
        return toml_float(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


def toml_document(document: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in document.items())


VALID = (
    '[project]\nname = "demo"\nversion = "1.0"\nrequires-python = ">=3.10"\n'
    'dependencies = ["flask>=3"]\n[tool.pydeploy]\napp = "app:app"\n'
)
# A valid pyproject with a generated table spliced in (a parse or a model problem, mostly).
SPLICED = st.builds(
    lambda doc, where: VALID[:where] + "\n" + toml_document(doc) + VALID[where:],
    DOCUMENTS,
    st.sampled_from([0, VALID.index("[tool.pydeploy]"), len(VALID)]),
)
DEEP = st.builds(
    lambda depth, key: VALID + f"{key} = " + "[" * depth + "]" * depth + "\n",
    st.integers(min_value=1, max_value=5000),
    st.sampled_from(["tags", "env", "exclude"]),
)
PYPROJECTS = st.one_of(
    st.binary(max_size=200),
    st.builds(toml_document, DOCUMENTS).map(str.encode),
    SPLICED.map(str.encode),
    DEEP.map(str.encode),
    st.builds(lambda text: (VALID + text).encode("utf-16"), st.text(max_size=10)),
)
SIDE_FILES = st.dictionaries(
    st.sampled_from(["uv.lock", "pylock.toml", ".python-version", "requirements.txt"]),
    st.one_of(
        st.binary(max_size=100),
        st.builds(toml_document, DOCUMENTS).map(str.encode),
        st.builds(
            lambda entries, key: toml_document({key: entries}).encode(),
            st.lists(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4), max_size=3),
            st.sampled_from(["package", "packages"]),
        ),
    ),
    max_size=3,
)


def only_own_errors(step: Callable[[], object]) -> None:
    """Run `step`; a PydeployError must be one short paragraph, anything else fails."""
    message = ""
    try:
        step()
    except PydeployError as exc:
        message = exc.message
    assert "\n" not in message, message
    assert len(message) < 4000, message[:4000]


def read_everything(root: Path) -> None:
    """Every loader a command runs before it needs an engine, in the CLI's order."""
    read_pyproject(root)
    load_config(root)
    project = load_project(root)
    plan = make_plan(project, Overrides(base_image="local/base:1"))
    depinputs.dependency_inputs(plan)


@PROPERTY
@given(pyproject=PYPROJECTS)
def test_any_pyproject_gives_only_pydeploy_errors(pyproject: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_bytes(pyproject)
        (root / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
        only_own_errors(lambda: read_everything(root))


@settings(PROPERTY, max_examples=60)  # each example writes and reads several files
@given(files=SIDE_FILES, source=st.sampled_from(["auto", "uv.lock", "pylock", "requirements"]))
def test_any_lock_or_side_file_gives_only_pydeploy_errors(
    files: dict[str, bytes], source: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text(
            VALID + f'[tool.pydeploy.dependencies]\nsource = "{source}"\n', encoding="utf-8"
        )
        (root / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
        for name, content in files.items():
            (root / name).write_bytes(content)
        only_own_errors(lambda: read_everything(root))


@PROPERTY
@given(text=st.one_of(st.text(max_size=200), st.builds(toml_document, DOCUMENTS)))
def test_any_pylock_text_gives_only_pydeploy_errors(text: str) -> None:
    only_own_errors(lambda: pylock.parse_pylock(text))
