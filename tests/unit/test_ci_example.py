"""examples/ci: every command the GitHub Actions workflow and the GitLab pipeline run is
a call of examples/ci/pydeploy-ci.sh (which tests/integration/test_ci_matrix.py
executes), the matrix comes from `build --all --list`'s `include`, an empty list skips
the build, and the GitLab child pipeline the script writes has one job per service."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"
WORKFLOW = CI / "github-actions.yml"
SCRIPT = CI / "pydeploy-ci.sh"
# The only commands a step may run: the script, by its path in the user's repository.
CALL = re.compile(
    r"bash \.github/pydeploy-ci\.sh "
    r'(install|list|build "\$PYDEPLOY_SERVICE"|verify builds)'
)
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def test_every_run_step_calls_the_script() -> None:
    jobs = workflow()["jobs"]
    assert list(jobs) == ["list", "build", "verify"]
    calls = {
        name: [step["run"].strip() for step in job["steps"] if "run" in step]
        for name, job in jobs.items()
    }
    for name, runs in calls.items():
        for run in runs:
            assert CALL.fullmatch(run), f"{name}: {run!r} is not a call of pydeploy-ci.sh"
            assert not EXPRESSION.search(run), "values go through env, never into the command"
    assert calls == {
        "list": ["bash .github/pydeploy-ci.sh install", "bash .github/pydeploy-ci.sh list"],
        "build": ["bash .github/pydeploy-ci.sh install",
                  'bash .github/pydeploy-ci.sh build "$PYDEPLOY_SERVICE"'],
        "verify": ["bash .github/pydeploy-ci.sh verify builds"],
    }  # fmt: skip


def test_the_matrix_is_the_listings_include_and_an_empty_one_is_skipped() -> None:
    jobs = workflow()["jobs"]
    list_step = next(s for s in jobs["list"]["steps"] if s.get("id") == "list")
    assert list_step["run"] == "bash .github/pydeploy-ci.sh list"
    assert jobs["list"]["outputs"] == {
        "matrix": "${{ steps.list.outputs.matrix }}",
        "count": "${{ steps.list.outputs.count }}",
    }
    build = jobs["build"]
    assert build["needs"] == "list"
    assert build["if"] == "needs.list.outputs.count != '0'"
    assert build["strategy"]["matrix"] == {
        "include": "${{ fromJSON(needs.list.outputs.matrix).include }}"
    }
    assert build["env"]["PYDEPLOY_SERVICE"] == "${{ matrix.name }}"
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload"))
    assert upload["with"]["path"] == "build-${{ matrix.name }}.json"
    assert jobs["verify"]["needs"] == "build"
    download = next(s for s in jobs["verify"]["steps"] if "download" in s.get("uses", ""))
    assert download["with"] == {"pattern": "build-*", "path": "builds", "merge-multiple": True}


def test_the_script_is_valid_bash_and_refuses_bad_input(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    for args in ([], ["nope"], ["build"], ["build", "../x"], ["build", "Api"], ["verify", "none"]):
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("pydeploy-ci: "), proc.stderr
    (tmp_path / "builds").mkdir()
    proc = subprocess.run(["bash", str(SCRIPT), "verify", "builds"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (proc.returncode, proc.stderr) == (2, "pydeploy-ci: verify: no build-*.json in builds\n")


GITLAB = CI / "gitlab-ci.yml"
GITLAB_JOBS = CI / "gitlab-pydeploy-jobs.yml"
GITLAB_CALL = re.compile(
    r"bash \.gitlab/pydeploy-ci\.sh "
    r'(install|list|build "\$PYDEPLOY_SERVICE"|verify \.|gitlab-pipeline > pydeploy-pipeline\.yml)'
)


def gitlab(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def test_gitlab_scripts_call_the_same_script() -> None:
    jobs = {**gitlab(GITLAB), **gitlab(GITLAB_JOBS)}
    scripts = {name: job["script"] for name, job in jobs.items()
               if isinstance(job, dict) and "script" in job}  # fmt: skip
    assert sorted(scripts) == [".pydeploy-build", ".pydeploy-nothing", ".pydeploy-verify", "list"]
    for name, lines in scripts.items():
        if name == ".pydeploy-nothing":
            assert lines == ['echo "pydeploy: no workspace member to build (nothing changed)"']
            continue
        for line in lines:
            assert GITLAB_CALL.fullmatch(line), f"{name}: {line!r} is not a call of pydeploy-ci.sh"
    assert gitlab(GITLAB)["build"]["trigger"]["include"] == [
        {"artifact": "pydeploy-pipeline.yml", "job": "list"}
    ]


@pytest.mark.parametrize(
    ("names", "push"),
    [((), "1"), (("api", "web"), "1"), (("api",), "")],
    ids=["empty", "push", "merge-request"],
)
def test_gitlab_child_pipeline(tmp_path: Path, names: tuple[str, ...], push: str) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq; .ci/test installs it)")
    listing = {"include": [{"name": n, "directory": f"services/{n}", "image": f"r/{n}:1"}
                           for n in names]}  # fmt: skip
    (tmp_path / "pydeploy-list.json").write_text(json.dumps(listing))
    proc = subprocess.run(
        ["bash", str(SCRIPT), "gitlab-pipeline"], cwd=tmp_path, capture_output=True, text=True,
        check=True, env={**os.environ, "PYDEPLOY_PUSH": push},
    )  # fmt: skip
    pipeline = yaml.safe_load(proc.stdout)
    assert pipeline.pop("include") == [{"local": ".gitlab/pydeploy-jobs.yml"}]
    templates = gitlab(GITLAB_JOBS)
    for job in pipeline.values():
        assert job["extends"] in templates
    if not names:
        assert pipeline == {"nothing-to-build": {"extends": ".pydeploy-nothing"}}
        return
    builds = {f"build-{n}": {"extends": ".pydeploy-build",
                             "variables": {"PYDEPLOY_SERVICE": n, "PYDEPLOY_PUSH": push}}
              for n in names}  # fmt: skip
    verify = {"verify": {"extends": ".pydeploy-verify", "needs": list(builds)}} if push else {}
    assert pipeline == {**builds, **verify}
