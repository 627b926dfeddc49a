"""`pydeploy build --all` on a copy of examples/monorepo (a uv workspace): every service
built in parallel, served over HTTP with the workspace library installed as a wheel, one
dependency layer for services with the same dependency set, selection by --only and
--changed-since, a broken service failing alone, and the --json / --metadata-file
document validated against schema/build-result.schema.json.

The copy gets a third service, `api2`: api's dependencies under another name with other
code. Builds are few and share the uv cache and venv volumes, so all but the first are
warm; venv volumes this module creates are removed at its end."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import jsonschema
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, RunPydeploy, WaitHttp

ROOT = Path(__file__).resolve().parents[2]
MONOREPO = ROOT / "examples" / "monorepo"
SCHEMA = ROOT / "schema" / "build-result.schema.json"
SERVICES = ("api", "api2", "web")
REGISTRY_PREFIX = "pydeploy-test"  # --registry: refs become pydeploy-test/<service>:<tag>
BUILD_TIMEOUT = 1200.0  # a cold build downloads wheels through the proxy

Document = dict[str, Any]


# --- the workspace copy ---------------------------------------------------------------


def make_workspace(dest: Path) -> Path:
    """A copy of examples/monorepo with a third service `api2`: api's pyproject.toml and
    dependencies under another name, and different code. The root lock gets api2 as a
    member with api's dependency list, which is what `uv lock` would write for it."""
    shutil.copytree(MONOREPO, dest, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    api, api2 = dest / "services" / "api", dest / "services" / "api2"
    api2.mkdir()
    pyproject = (api / "pyproject.toml").read_text(encoding="utf-8")
    assert 'name = "api"' in pyproject
    (api2 / "pyproject.toml").write_text(
        pyproject.replace('name = "api"', 'name = "api2"'), encoding="utf-8"
    )
    code = (api / "main.py").read_text(encoding="utf-8")
    assert '"service": "api"' in code
    (api2 / "main.py").write_text(
        code.replace('"api"', '"api2"') + '\n\n@app.get("/v2")\nasync def v2() -> int:\n'
        "    return 2\n",
        encoding="utf-8",
    )

    lock_path = dest / "uv.lock"
    lock = lock_path.read_text(encoding="utf-8")
    members = re.search(r'(?m)^members = \[\n    "api",\n', lock)
    block = re.search(r'(?s)\[\[package\]\]\nname = "api"\n.*?(?=\n\[\[package\]\])', lock)
    assert members, "examples/monorepo/uv.lock changed shape; update make_workspace"
    assert block, "examples/monorepo/uv.lock changed shape; update make_workspace"
    api2_block = block.group(0).replace('name = "api"', 'name = "api2"')
    api2_block = api2_block.replace('"services/api"', '"services/api2"')
    assert api2_block.count("api2") == 2, api2_block
    lock = lock[: block.end()] + "\n\n" + api2_block + lock[block.end() :]
    lock = lock.replace(members.group(0), members.group(0) + '    "api2",\n', 1)
    lock_path.write_text(lock, encoding="utf-8")
    return dest


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=pydeploy tests", "-c", "user.email=tests@example.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=root, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def git_commit_all(root: Path) -> None:
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "monorepo")


# --- running the CLI ------------------------------------------------------------------


class Builder:
    """`pydeploy build` against one workspace copy, with the test's base image, host
    networking and a unique tag; every ref a build may create is registered for removal
    before the build runs, and every venv volume it creates is recorded."""

    def __init__(
        self,
        root: Path,
        base_image: str,
        resources: Resources,
        volumes: set[str],
        pydeploy: RunPydeploy,
    ) -> None:
        self.root, self.base_image, self.volumes = root, base_image, volumes
        self.pydeploy = pydeploy
        self.tag = f"t-{uuid.uuid4().hex[:10]}"
        # Every container its builds create carries this label: what they leave behind is
        # told apart from anything else on a shared engine.
        self.run_label = f"pydeploy.test.run={self.tag}"
        for service in SERVICES:
            resources.image(self.ref(service))

    def ref(self, service: str) -> str:
        return f"{REGISTRY_PREFIX}/{service}:{self.tag}"

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.pydeploy(
            "build", *args, "--base", self.base_image, "--network", "host",
            "--registry", REGISTRY_PREFIX, "--tag", self.tag, "--json",
            cwd=cwd or self.root,
            env={**os.environ, "PYDEPLOY_CONTAINER_LABELS": self.run_label},
        )  # fmt: skip

    def document(self, proc: subprocess.CompletedProcess[str]) -> Document:
        try:
            document: Document = json.loads(proc.stdout)
        except ValueError:
            pytest.fail(f"--json printed no JSON (exit {proc.returncode}):\n"
                        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")  # fmt: skip
        results = [s["result"] for s in document.get("services", []) if "result" in s]
        for result in results or ([document] if "image_id" in document else []):
            if not result["dependencies"]["cached"]:
                self.volumes.add(result["dependencies"]["volume"])
        return document


@pytest.fixture(scope="module")
def module_volumes(docker_client: docker.DockerClient) -> Iterator[set[str]]:
    """Venv volumes that this module's builds created (`cached: false`): they are keyed
    by the copy's lock, which no other test uses, so they go when the module is done."""
    names: set[str] = set()
    yield names
    for name in sorted(names):
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.volumes.get(name).remove(force=True)


@pytest.fixture
def make_builder(
    base_image: str, resources: Resources, module_volumes: set[str], run_pydeploy: RunPydeploy
) -> Callable[[Path], Builder]:
    return lambda root: Builder(root, base_image, resources, module_volumes, run_pydeploy)


@pytest.fixture(scope="module")
def validate() -> Callable[[Document], None]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)

    def check(document: Document) -> None:
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(document)]  # fmt: skip
        assert problems == [], f"does not match {SCHEMA.name}"

    return check


def names(document: Document) -> list[str]:
    return [service["name"] for service in document["services"]]


def results(document: Document) -> dict[str, Document]:
    return {s["name"]: s["result"] for s in document["services"] if "result" in s}


def dependency_layers(result: Document) -> list[tuple[str, str]]:
    """The dependency layers' roles and digests, in image order."""
    return [(la["role"], la["digest"]) for la in result["layers"]
            if la["role"].startswith("dependencies-")]  # fmt: skip


def layer(result: Document, role: str) -> str:
    (digest,) = [la["digest"] for la in result["layers"] if la["role"] == role]
    return str(digest)


def build_containers(client: docker.DockerClient, builder: Builder) -> set[str]:
    """The containers `builder`'s runs created that still exist."""
    found = client.containers.list(all=True, filters={"label": builder.run_label})
    return {c.id or "" for c in found}


# --- --all: build, share, serve ---------------------------------------------------------

PROGRESS = re.compile(r"^\d\d:\d\d:\d\d \[(?P<who>[a-z0-9-]+)\] \[ *\d+\.\d+s\] \S[^\n]*$")
SUMMARY_OK = re.compile(r"^  ok +(?P<who>[a-z0-9-]+) +\d+\.\d+s  (?P<tags>\S+)$")

# Run in the api image as its runtime user: where `shared` comes from, what /app holds,
# and whether any of web's code is anywhere under /app or /opt.
INSPECT = r"""
import importlib.metadata as md, json, os, sys
import shared
dist = md.distribution("shared")
app_files = sorted(os.path.relpath(os.path.join(d, f), "/app")
                   for d, _, fs in os.walk("/app") for f in fs)
web_code = []
for top in ("/app", "/opt"):
    for d, _, fs in os.walk(top):
        for f in fs:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                with open(path, "rb") as handle:
                    if b"The monorepo's WSGI service" in handle.read():
                        web_code.append(path)
site = str(dist.locate_file(""))
print(json.dumps({
    "shared": shared.__file__,
    "site": site,
    "dist_files": sorted(str(f) for f in dist.files or []),
    "direct_url": dist.read_text("direct_url.json"),
    "pth": sorted(f for f in os.listdir(site) if f.endswith(".pth")),
    "app_files": app_files,
    "roots": sorted(os.listdir("/")),
    "web_code": web_code,
    "greeting": shared.greeting("inspect"),
}))
"""


def check_progress_and_summary(stderr: str, builder: Builder) -> None:
    """Progress: one timestamped line per step, each prefixed with its service, nothing
    torn; three parallel builds interleave. The summary: one line per service with its
    tag."""
    lines = stderr.splitlines()
    assert lines[0] == "pydeploy: building 3 services: api, api2, web"
    summary = lines.index("summary:")
    steps = lines[1:summary]
    progress = [PROGRESS.match(line) for line in steps]
    assert all(progress), [line for line, m in zip(steps, progress, strict=True) if not m]
    order = [m["who"] for m in progress if m]
    assert set(order) == set(SERVICES)
    spans = {s: (order.index(s), len(order) - 1 - order[::-1].index(s)) for s in SERVICES}
    assert any(
        spans[a][0] < spans[b][0] < spans[a][1] for a in SERVICES for b in SERVICES if a != b
    ), order
    rows = [SUMMARY_OK.match(line) for line in lines[summary + 1 :]]
    assert all(rows), lines[summary + 1 :]
    assert [(m["who"], m["tags"]) for m in rows if m] == [(s, builder.ref(s)) for s in SERVICES]


def check_services_answer(
    builder: Builder,
    resources: Resources,
    free_port_factory: Callable[[], int],
    wait_http: WaitHttp,
) -> None:
    """Both kinds of service answer with the workspace library's greeting."""
    for service in ("api", "web"):
        port = free_port_factory()
        container = resources.create(builder.ref(service), environment={"PORT": str(port)})
        container.start()
        body = json.loads(wait_http(f"http://127.0.0.1:{port}/", timeout=60))
        assert body["service"] == service
        assert body["greeting"] == f"Hello from shared, {service}!"
        assert body["uptime"]  # humanize, the library's own dependency, is installed
        container.remove(force=True)


def check_api_image(builder: Builder, resources: Resources, api_dir: Path) -> None:
    """`shared` is an installed wheel in the venv, not a copy of the repository, and the
    api image's app layer holds api's files only."""
    run = resources.run(builder.ref("api"), ["-c", INSPECT],
                        entrypoint=["/opt/venv/bin/python"])  # fmt: skip
    assert run.exit_code == 0, run.output
    facts = json.loads(run.output.strip().splitlines()[-1])
    assert facts["site"].startswith("/opt/venv/lib/python3.")
    assert facts["site"].endswith("/site-packages")
    assert facts["shared"] == f"{facts['site']}/shared/__init__.py"
    assert "shared-0.1.0.dist-info/METADATA" in facts["dist_files"]
    assert "shared-0.1.0.dist-info/RECORD" in facts["dist_files"]
    assert facts["direct_url"] is None or '"editable": true' not in facts["direct_url"]
    assert facts["pth"] == []  # no editable-install path hooks
    assert facts["greeting"] == "Hello from shared, inspect!"
    assert "main.py" in facts["app_files"]
    assert [f for f in facts["app_files"] if not (api_dir / f).is_file()] == []
    assert not {"libs", "services", "src", "workspace"} & set(facts["roots"])
    assert facts["web_code"] == []


def test_all_builds_every_service_serves_and_shares_the_dependency_layer(
    tmp_path: Path,
    make_builder: Callable[[Path], Builder],
    validate: Callable[[Document], None],
    resources: Resources,
    free_port_factory: Callable[[], int],
    wait_http: WaitHttp,
) -> None:
    root = make_workspace(tmp_path / "mono")
    builder = make_builder(root)
    metadata = tmp_path / "result.json"
    proc = builder.run("--all", str(root), "--jobs", "3", "--metadata-file", str(metadata),
                       cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    document = builder.document(proc)
    validate(document)
    assert json.loads(metadata.read_text(encoding="utf-8")) == document
    assert document["ok"] is True
    assert names(document) == list(SERVICES)
    built = results(document)
    for service in SERVICES:
        assert built[service]["tags"] == [builder.ref(service)]
        assert built[service]["project"] == service
    assert (built["api"]["interface"], built["web"]["interface"]) == ("asgi", "wsgi")

    # api and api2 install the same dependency set (their dependency keys differ by the
    # member name, so each has its own venv volume): the layer bytes must still be equal.
    assert dependency_layers(built["api"]) == dependency_layers(built["api2"])
    assert dependency_layers(built["web"]) != dependency_layers(built["api"])
    assert layer(built["api"], "app") != layer(built["api2"], "app")
    assert built["api"]["dependencies"]["pins"] == built["api2"]["dependencies"]["pins"]
    assert "shared==0.1.0" in built["web"]["dependencies"]["pins"]
    assert not any(p.startswith("flask==") for p in built["api"]["dependencies"]["pins"])

    check_progress_and_summary(proc.stderr, builder)
    check_services_answer(builder, resources, free_port_factory, wait_http)
    check_api_image(builder, resources, root / "services" / "api")

    # One service from elsewhere in the repository: the single-build document, and the
    # same image as --all built (same inputs, same image).
    single_metadata = tmp_path / "web.json"
    proc = builder.run("../../services/web", "--metadata-file", str(single_metadata),
                       cwd=root / "libs" / "shared")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    single = builder.document(proc)
    validate(single)
    assert json.loads(single_metadata.read_text(encoding="utf-8")) == single
    assert single["image_id"] == built["web"]["image_id"]
    assert single["dependencies"]["cached"] is True


# --- selection --------------------------------------------------------------------------


def test_changed_since_and_only_select_services(
    tmp_path: Path,
    make_builder: Callable[[Path], Builder],
    validate: Callable[[Document], None],
) -> None:
    root = make_workspace(tmp_path / "mono")
    git_commit_all(root)
    builder = make_builder(root)

    # Unknown names stop before anything is built, with a suggestion and the valid names.
    proc = builder.run("--all", ".", "--only", "webb")
    assert proc.returncode == 2, proc.stderr
    assert "Did you mean 'web'?" in proc.stderr
    assert "Valid names: api, api2, web." in proc.stderr
    proc = builder.run("--all", ".", "--only", "nope")
    assert proc.returncode == 2, proc.stderr
    assert "`--only nope` names no workspace member" in proc.stderr
    assert "Valid names: api, api2, web." in proc.stderr
    assert proc.stdout == ""

    proc = builder.run("--all", ".", "--changed-since", "HEAD")
    assert proc.returncode == 0, proc.stderr
    assert builder.document(proc) == {"ok": True, "services": []}
    assert "no workspace member to build (nothing changed since HEAD)" in proc.stderr

    app = root / "services" / "web" / "app.py"
    app.write_text(app.read_text(encoding="utf-8").replace('"web"', '"web, edited"'),
                   encoding="utf-8")  # fmt: skip
    proc = builder.run("--all", ".", "--changed-since", "HEAD")
    assert proc.returncode == 0, proc.stderr[-6000:]
    document = builder.document(proc)
    validate(document)
    assert names(document) == ["web"]
    assert "building 1 services: web" in proc.stderr
    assert not re.search(r"\[api2?\]", proc.stderr)

    proc = builder.run("--all", ".", "--only", "web")
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert names(builder.document(proc)) == ["web"]

    # The library is a dependency of every service: changing it selects them all.
    library = root / "libs" / "shared" / "src" / "shared" / "__init__.py"
    library.write_text(library.read_text(encoding="utf-8").replace("Hello from", "Hi from"),
                       encoding="utf-8")  # fmt: skip
    proc = builder.run("--all", ".", "--changed-since", "HEAD", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-6000:]
    document = builder.document(proc)
    validate(document)
    assert names(document) == list(SERVICES)


# --- failure ------------------------------------------------------------------------------


def test_a_broken_service_fails_alone(
    tmp_path: Path,
    make_builder: Callable[[Path], Builder],
    validate: Callable[[Document], None],
    docker_client: docker.DockerClient,
) -> None:
    root = make_workspace(tmp_path / "mono")
    pyproject = root / "services" / "api2" / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert 'app = "main:app"' in text
    pyproject.write_text(text.replace('app = "main:app"', 'app = "main:nope"'), encoding="utf-8")
    builder = make_builder(root)
    metadata = tmp_path / "result.json"

    proc = builder.run("--all", ".", "--metadata-file", str(metadata))
    assert proc.returncode == 7, proc.stderr[-6000:]  # the app check's exit code
    document = builder.document(proc)
    validate(document)
    assert json.loads(metadata.read_text(encoding="utf-8")) == document
    assert document["ok"] is False
    status = {s["name"]: s["status"] for s in document["services"]}
    assert status == {"api": "ok", "api2": "failed", "web": "ok"}
    (failed,) = [s for s in document["services"] if s["status"] == "failed"]
    assert failed["error"]["kind"] == "app-check"
    assert failed["error"]["exit_code"] == 7
    assert "main:nope" in failed["error"]["message"]

    summary = proc.stderr[proc.stderr.index("\nsummary:\n") :]
    assert re.search(r"(?m)^  ok +api +\d+\.\d+s  " + re.escape(builder.ref("api")) + "$",
                     summary)  # fmt: skip
    assert re.search(r"(?m)^  ok +web +\d+\.\d+s  " + re.escape(builder.ref("web")) + "$",
                     summary)  # fmt: skip
    assert re.search(r"(?m)^  FAILED +api2 +\d+\.\d+s  app-check error: .*main:nope", summary)
    assert "Traceback" not in proc.stderr

    # The others were loaded; the broken one was not, and no builder container is left.
    for service in ("api", "web"):
        docker_client.images.get(builder.ref(service))
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(builder.ref("api2"))
    assert build_containers(docker_client, builder) == set()
