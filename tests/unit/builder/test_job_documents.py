"""The host/container protocol is stated once, in the payload: the host's job documents
carry exactly the keys the builder script's TypedDicts declare, and the host reads the
protocol marker from there."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from pydeploy.builder import appcheck, stage, transcript
from pydeploy.builder.stage import BuilderImage, PythonInfo
from pydeploy.config.project import load_project
from pydeploy.payload import builder_script
from pydeploy.plan.depinputs import dependency_inputs
from pydeploy.plan.planner import BuildPlan, Overrides, make_plan

PYTHON = PythonInfo("/usr/local/bin/python3", "3.12.1", "lib/python3.12/site-packages")


def _plan(root: Path) -> BuildPlan:
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [project]
            name = "demo"
            version = "1.0"
            dependencies = []

            [tool.pydeploy]
            app = "app:app"
            """
        ),
        encoding="utf-8",
    )
    (root / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    return make_plan(load_project(root), Overrides(base_image="local/base:1"))


def _keys(document: object) -> set[str]:
    """The keys as the container reads them: after the JSON round trip."""
    loaded = json.loads(json.dumps(document))
    assert isinstance(loaded, dict)
    return set(loaded)


def test_install_job_has_exactly_the_declared_keys(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    builder = BuilderImage("pydeploy-builder:x", "sha256:1", PYTHON, "k", light=True)
    job = stage.install_job(dependency_inputs(plan), "key", ("gunicorn",), builder)
    assert _keys(job) == set(builder_script.InstallJob.__annotations__) | set(
        builder_script.SkipLists.__annotations__
    )
    assert _keys(job) == builder_script.InstallJob.__required_keys__


def test_project_job_has_exactly_the_declared_keys() -> None:
    job = stage.project_job(BuilderImage("pydeploy-builder:x", "sha256:1", PYTHON, "k"))
    assert _keys(job) == builder_script.ProjectJob.__required_keys__


def test_check_job_and_its_measure_have_exactly_the_declared_keys(tmp_path: Path) -> None:
    job = appcheck.check_job(_plan(tmp_path))
    assert _keys(job) == builder_script.CheckJob.__required_keys__
    assert _keys(job["measure"]) == builder_script.Measure.__required_keys__


def test_the_host_reads_the_payloads_marker() -> None:
    assert transcript.protocol_result(f'{builder_script.MARK}result {{"a": 1}}\n') == {"a": 1}
