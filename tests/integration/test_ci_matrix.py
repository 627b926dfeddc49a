"""examples/ci/github-actions.yml's steps, run here as far as they need no GitHub: each
job's `run:` commands (calls of examples/ci/pydeploy-ci.sh) with the workflow's env,
against a git copy of examples/monorepo and the session registry. `list` gives the
matrix, one `build` per service runs in parallel as its own "runner" (its own
PYDEPLOY_CACHE_DIR and working files), pushing; `verify` checks the pushed digests with
skopeo. What stays GitHub's: checkout, setup-python, `install` (pydeploy comes from this
tree), login, and the artifact upload/download (a copy of the files here).

Then: two services with identical dependency sets, built by two fresh runners, get
identical dependency layer digests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import pytest
import yaml

if TYPE_CHECKING:
    from tests.integration.conftest import Resources

ROOT = Path(__file__).resolve().parents[2]
MONOREPO = ROOT / "examples" / "monorepo"
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"
SCRIPT = ROOT / "examples" / "ci" / "pydeploy-ci.sh"
SCRIPT_IN_REPO = Path(".github") / "pydeploy-ci.sh"  # where the workflow expects it
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
STEP_TIMEOUT = 1500.0  # a cold build downloads wheels through the proxy

Document = dict[str, Any]


# --- the checkout -----------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=pydeploy tests", "-c", "user.email=tests@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=root, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.stdout.strip()


def configure(pyproject: Path, base_image: str) -> None:
    """What the repository's own config would say on this machine: the local base image
    and host networking (there is no bridge here)."""
    text = pyproject.read_text(encoding="utf-8")
    assert "[tool.pydeploy]\n" in text
    text = text.replace(
        "[tool.pydeploy]\n",
        f'[tool.pydeploy]\nbase-image = "{base_image}"\nnetwork = "host"\n',
        1,
    )
    pyproject.write_text(text, encoding="utf-8")


def checkout(dest: Path, base_image: str, twins: tuple[str, str] | None = None) -> Path:
    """A git repository holding a copy of examples/monorepo and the script at the path
    the workflow calls. With `twins`, services/api becomes two services of those names
    with api's dependency set (the root lock says so, as `uv lock` would) and different
    code."""
    shutil.copytree(MONOREPO, dest, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    (dest / SCRIPT_IN_REPO).parent.mkdir()
    shutil.copy2(SCRIPT, dest / SCRIPT_IN_REPO)
    if twins:
        make_twins(dest, twins)
    for pyproject in sorted((dest / "services").glob("*/pyproject.toml")):
        configure(pyproject, base_image)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "monorepo")
    return dest


def make_twins(dest: Path, twins: tuple[str, str]) -> None:
    api = dest / "services" / "api"
    pyproject = (api / "pyproject.toml").read_text(encoding="utf-8")
    code = (api / "main.py").read_text(encoding="utf-8")
    assert 'name = "api"' in pyproject
    assert '"service": "api"' in code
    for name in twins:
        (dest / "services" / name).mkdir()
        (dest / "services" / name / "pyproject.toml").write_text(
            pyproject.replace('name = "api"', f'name = "{name}"'), encoding="utf-8"
        )
        (dest / "services" / name / "main.py").write_text(
            code.replace('"api"', f'"{name}"'), encoding="utf-8"
        )
    shutil.rmtree(api)
    lock_path = dest / "uv.lock"
    lock = lock_path.read_text(encoding="utf-8")
    block = re.search(r'(?s)\[\[package\]\]\nname = "api"\n.*?(?=\n\[\[package\]\])', lock)
    assert block, "examples/monorepo/uv.lock changed shape"
    assert '    "api",\n' in lock, "examples/monorepo/uv.lock changed shape"
    copies = []
    for name in twins:
        copy = block.group(0).replace('name = "api"', f'name = "{name}"')
        copies.append(copy.replace('"services/api"', f'"services/{name}"'))
    lock = lock[: block.start()] + "\n\n".join(copies) + lock[block.end() :]
    lock = lock.replace('    "api",\n', "".join(f'    "{n}",\n' for n in twins), 1)
    lock_path.write_text(lock, encoding="utf-8")


# --- the workflow, run here -------------------------------------------------------------


def workflow() -> Document:
    loaded: Document = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def expand(value: object, context: Mapping[str, str]) -> str:
    """A workflow value with its `${{ ... }}` expressions replaced from `context` (the
    expression's text -> its value); an expression the test does not know fails it."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) not in context:
            pytest.fail(f"the workflow uses ${{{{ {match.group(1)} }}}}, unknown to this test")
        return context[match.group(1)]

    return EXPRESSION.sub(one, str(value))


def pydeploy_on_path(bin_dir: Path) -> Path:
    """`pydeploy` on PATH: this tree's, as `install` would put the released one there."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "pydeploy"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH={ROOT / "builder"} exec {sys.executable} -m pydeploy "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return bin_dir


class Runner:
    """One job of the workflow on a fresh "runner": the workflow's, job's and step's env
    (expanded from `context`), its own PYDEPLOY_CACHE_DIR, and the step's `run:` in bash
    with the checkout as the working directory, as GitHub runs it."""

    def __init__(
        self,
        job: str,
        context: Mapping[str, str],
        checkout: Path,
        home: Path,
        registry: str,
        overrides: Mapping[str, str],
    ) -> None:
        self.document = workflow()
        self.job = self.document["jobs"][job]
        self.checkout = checkout
        home.mkdir(parents=True, exist_ok=True)
        self.output = home / "github-output"
        self.output.write_text("", encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GITHUB_", "PYDEPLOY_", "DOCKER_"))}  # fmt: skip
        env["PATH"] = f"{pydeploy_on_path(home / 'bin')}{os.pathsep}{env.get('PATH', '')}"
        env["CI"] = env["GITHUB_ACTIONS"] = "true"
        env["GITHUB_OUTPUT"] = str(self.output)
        env["PYDEPLOY_CACHE_DIR"] = str(home / "pydeploy-cache")
        env["PYDEPLOY_CONTAINER_LABELS"] = f"pydeploy.test.ci={home.name}"
        for mapping in (self.document.get("env", {}), self.job.get("env", {})):
            env.update({k: expand(v, context) for k, v in mapping.items()})
        # Where this machine differs from GitHub: the registry (and the script's copy).
        for key, value in overrides.items():
            env[key] = value.replace("ghcr.io", registry)
        self.env = env
        self.context = context

    def runs(self) -> list[tuple[str, Document]]:
        return [(step["run"], step) for step in self.job["steps"] if "run" in step]

    def start(self, run: str, step: Document) -> subprocess.Popen[str]:
        env = {**self.env, **{k: expand(v, self.context) for k, v in step.get("env", {}).items()}}
        return subprocess.Popen(
            ["bash", "-e", "-c", run], cwd=self.checkout, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def run_steps(self) -> list[Finished]:
        """Every `run:` step but `install` (pydeploy is on PATH already), in order."""
        return [finish(self.start(run, step)) for run, step in self.runs()
                if not run.endswith(" install")]  # fmt: skip

    def outputs(self) -> dict[str, str]:
        lines = self.output.read_text(encoding="utf-8").splitlines()
        return dict(line.split("=", 1) for line in lines)


class Finished:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


def finish(proc: subprocess.Popen[str]) -> Finished:
    """Wait for a step; SIGTERM on timeout, which pydeploy turns into its cleanup."""
    try:
        stdout, stderr = proc.communicate(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=120)
        stderr += f"\n(timed out after {STEP_TIMEOUT:g} s)"
    return Finished(proc.returncode, stdout, stderr)


@pytest.fixture
def created_volumes(docker_client: docker.DockerClient) -> Iterator[set[str]]:
    """Venv volumes the test's builds created (`cached: false`), removed at its end."""
    names: set[str] = set()
    yield names
    for name in sorted(names):
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(name).remove(force=True)


def results(path: Path, volumes: set[str]) -> list[Document]:
    document: Document = json.loads(path.read_text(encoding="utf-8"))
    found = [s["result"] for s in document["services"] if "result" in s]
    for result in found:
        if not result["dependencies"]["cached"]:
            volumes.add(result["dependencies"]["volume"])
    return found


def require_tools() -> None:
    """What the script's steps need beside pydeploy (GitHub's runners have both): a
    missing one skips locally and fails under CI, as for the engine."""
    for tool in ("jq", "skopeo"):
        if shutil.which(tool) is None:
            fix = f"apt-get install {tool}, or run .ci/test (it installs it)"
            if os.environ.get("CI", "").strip().lower() in {"true", "1"}:
                pytest.fail(f"{tool} is not installed; under CI this is a failure. Fix: {fix}")
            pytest.skip(f"{tool} is not installed. To run this test: {fix}")


# --- the tests --------------------------------------------------------------------------


def test_workflow_list_build_per_runner_and_verify(  # noqa: PLR0915 - one workflow run
    tmp_path: Path,
    base_image: str,
    registry: str,
    resources: Resources,
    created_volumes: set[str],
) -> None:
    require_tools()
    repo = checkout(tmp_path / "checkout", base_image)
    sha = git(repo, "rev-parse", "HEAD")
    owner = f"PyDeploy-CI-{uuid.uuid4().hex[:8]}"  # the script lowercases it
    context = {
        "github.repository_owner": owner,
        "github.sha": sha,
        "github.event_name": "push",
        "github.event.pull_request.base.sha": "",
        "github.event_name == 'push' && '1' || ''": "1",
    }
    overrides = {
        "PYDEPLOY_REGISTRY": f"ghcr.io/{owner}",
        "PYDEPLOY_CACHE_REPO": f"ghcr.io/{owner.lower()}/pydeploy-cache",
    }
    prefix = f"{registry}/{owner.lower()}"

    # list: the matrix, and the step outputs the build job reads.
    lister = Runner("list", context, repo, tmp_path / "runner-list", registry, overrides)
    (listed,) = lister.run_steps()
    assert listed.code == 0, listed.stderr
    outputs = lister.outputs()
    assert outputs["count"] == "2"
    document = json.loads(outputs["matrix"])
    assert json.loads(listed.stdout) == document
    include = document["include"]  # what fromJSON(needs.list.outputs.matrix).include gives
    assert include == [
        {"name": "api", "directory": "services/api", "image": f"{prefix}/api:{sha}"},
        {"name": "web", "directory": "services/web", "image": f"{prefix}/web:{sha}"},
    ]
    tags = {s["name"]: s["tags"] for s in document["services"]}
    assert tags["api"] == [f"{prefix}/api:{sha}", f"{prefix}/api:latest"]
    for ref in (t for service_tags in tags.values() for t in service_tags):
        resources.image(ref)  # the engine path also loads what it pushes

    # build: one runner per matrix entry, all at once.
    builders = {
        entry["name"]: Runner("build", {**context, "matrix.name": entry["name"]}, repo,
                              tmp_path / f"runner-build-{entry['name']}", registry, overrides)
        for entry in include
    }  # fmt: skip
    started = {}
    for name, runner in builders.items():
        ((run, step),) = [(r, s) for r, s in runner.runs() if not r.endswith(" install")]
        started[name] = runner.start(run, step)
    finished = {name: finish(proc) for name, proc in started.items()}
    for name, done in finished.items():
        assert done.code == 0, f"{name}:\n{done.stderr[-6000:]}"
    pushed = {}
    for name in builders:
        (result,) = results(repo / f"build-{name}.json", created_volumes)
        assert result["tags"] == tags[name], "the listing names what the build tags"
        assert sorted(result["pushed"]) == sorted(tags[name])
        assert set(result["pushed"].values()) == {result["manifest_digest"]}
        # The shared registry cache: read and written, the venv recorded (or found).
        cache = result["cache"]
        assert cache["from"] == cache["to"] == f"{prefix}/pydeploy-cache"
        assert "venv" in cache["saved"] + cache["restored"]
        pushed[name] = result["pushed"]
    assert pushed["api"] != pushed["web"]

    # verify: the artifacts downloaded into builds/, then the script's check.
    builds = repo / "builds"
    builds.mkdir()
    for name in builders:
        shutil.copy2(repo / f"build-{name}.json", builds / f"build-{name}.json")
    verifier = Runner("verify", context, repo, tmp_path / "runner-verify", registry, overrides)
    (verified,) = verifier.run_steps()
    assert verified.code == 0, verified.stderr
    assert "pydeploy-ci: 4 tag(s) in 2 file(s) verified" in verified.stderr
    for ref, digest in pushed["web"].items():
        assert f"pydeploy-ci: ok {ref} {digest}\n" in verified.stderr

    # A record that does not match the registry fails the job, naming the tag.
    web = json.loads((builds / "build-web.json").read_text(encoding="utf-8"))
    web["services"][0]["result"]["pushed"][tags["web"][1]] = pushed["api"][tags["api"][0]]
    (builds / "build-web.json").write_text(json.dumps(web), encoding="utf-8")
    (tampered,) = verifier.run_steps()
    assert tampered.code == 1, tampered.stderr
    assert f"{tags['web'][1]}: the registry serves" in tampered.stderr

    # A pull request: only what it changed is listed; nothing changed, an empty matrix.
    git(repo, "switch", "-q", "-c", "feature")
    app = repo / "services" / "web" / "app.py"
    app.write_text(app.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "edit web")
    pull = {**context, "github.event_name": "pull_request",
            "github.event.pull_request.base.sha": sha, "github.sha": git(repo, "rev-parse", "HEAD"),
            "github.event_name == 'push' && '1' || ''": ""}  # fmt: skip
    lister = Runner("list", pull, repo, tmp_path / "runner-list-pr", registry, overrides)
    (listed,) = lister.run_steps()
    assert listed.code == 0, listed.stderr
    assert lister.outputs()["count"] == "1"
    assert [e["name"] for e in json.loads(lister.outputs()["matrix"])["include"]] == ["web"]
    pull["github.event.pull_request.base.sha"] = pull["github.sha"]
    lister = Runner("list", pull, repo, tmp_path / "runner-list-empty", registry, overrides)
    (listed,) = lister.run_steps()
    assert listed.code == 0, listed.stderr
    # count 0: the build job's `if` is false, so no empty matrix reaches GitHub.
    assert lister.outputs()["count"] == "0"
    assert json.loads(lister.outputs()["matrix"])["include"] == []


def test_identical_dependency_sets_on_two_fresh_runners_give_identical_layers(
    tmp_path: Path,
    base_image: str,
    registry: str,
    docker_client: docker.DockerClient,
    resources: Resources,
    created_volumes: set[str],
) -> None:
    """Two services with the same dependency set, built by two "runners" one after the
    other: each with its own empty PYDEPLOY_CACHE_DIR, and the venv volume the first one
    created removed before the second starts (names unique to this test, so neither finds
    one of another run). Shared with the first runner, unlike on GitHub: the builder image
    and uv's wheel cache volume on this engine (a fresh runner builds the former and
    downloads the same wheel files into the latter)."""
    require_tools()
    suffix = uuid.uuid4().hex[:8]
    twins = (f"alpha-{suffix}", f"beta-{suffix}")
    repo = checkout(tmp_path / "checkout", base_image, twins)
    context = {
        "github.repository_owner": "pydeploy-ci",
        "github.sha": git(repo, "rev-parse", "HEAD"),
        "github.event_name": "push",
        "github.event.pull_request.base.sha": "",
        "github.event_name == 'push' && '1' || ''": "",  # build only: nothing to push
    }
    # No registry cache: it would hand the second runner the first one's layers.
    overrides = {"PYDEPLOY_REGISTRY": "ghcr.io/pydeploy-ci", "PYDEPLOY_CACHE_REPO": ""}
    layers: dict[str, list[tuple[str, str]]] = {}
    apps: dict[str, str] = {}
    for name in twins:
        runner = Runner("build", {**context, "matrix.name": name}, repo,
                        tmp_path / f"runner-{name}", registry, overrides)  # fmt: skip
        for tag in ("latest", context["github.sha"]):
            resources.image(f"{registry}/pydeploy-ci/{name}:{tag}")
        (done,) = runner.run_steps()
        assert done.code == 0, done.stderr[-6000:]
        (result,) = results(repo / f"build-{name}.json", created_volumes)
        assert result["dependencies"]["cached"] is False, "a fresh runner has no venv volume"
        layers[name] = [(la["role"], la["digest"]) for la in result["layers"]
                        if la["role"].startswith("dependencies-")]  # fmt: skip
        apps[name] = next(la["digest"] for la in result["layers"] if la["role"] == "app")
        # The next runner starts without it.
        volume = result["dependencies"]["volume"]
        docker_client.volumes.get(volume).remove(force=True)
        created_volumes.discard(volume)
    assert layers[twins[0]], "the images have dependency layers"
    assert layers[twins[0]] == layers[twins[1]]
    assert apps[twins[0]] != apps[twins[1]], "different code, different app layers"
