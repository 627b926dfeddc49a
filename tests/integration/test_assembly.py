"""Image assembly against a real engine and a real registry: outputs, reproducibility,
layer contents, and the failure paths (exit codes, nothing half-built)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, WaitHttp

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
FASTAPI = ROOT / "examples" / "fastapi-app"


def cli(
    *args: str, cache: Path | None = None, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    if cache is not None:
        environ["PYDEPLOY_CACHE_DIR"] = str(cache)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pydeploy", *args],
        capture_output=True,
        text=True,
        check=False,
        env=environ,
        timeout=timeout,
    )


def build_json(project: Path, base: str, *extra: str, cache: Path | None = None) -> dict[str, Any]:
    proc = cli("build", str(project), "--base", base, "--network", "host", "--json", *extra,
               cache=cache)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def layer_digests(result: dict[str, Any]) -> dict[str, str]:
    return {layer["role"]: layer["digest"] for layer in result["layers"] if layer["role"] != "base"}


def layout_config(layout: Path) -> dict[str, Any]:
    """The image config of a one-image OCI layout."""

    def blob(digest: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((layout / "blobs" / digest.replace(":", "/")).read_text())
        return data

    index = json.loads((layout / "index.json").read_text())
    return blob(blob(index["manifests"][0]["digest"])["config"]["digest"])


RUN_LABEL = "pydeploy.test.run"


def labelled_run() -> tuple[str, dict[str, str]]:
    """A label for the containers of one `pydeploy` run, and the env that applies it. The
    engine is shared (other test runs, other users): only this run's containers say
    anything about what this run left behind."""
    run = uuid.uuid4().hex[:12]
    return run, {"PYDEPLOY_CONTAINER_LABELS": f"{RUN_LABEL}={run}"}


def build_containers(client: docker.DockerClient, run: str) -> list[str]:
    found = client.api.containers(all=True, filters={"label": f"{RUN_LABEL}={run}"})
    return [str(c["Id"]) for c in found]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "fastapi-app"
    shutil.copytree(FASTAPI, dest)
    return dest


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def test_push_remove_pull_and_run(
    project: Path,
    base_image: str,
    registry: str,
    unique: str,
    resources: Resources,
    docker_client: docker.DockerClient,
    free_port: int,
    wait_http: WaitHttp,
) -> None:
    ref = f"{registry}/pydeploy-test/fastapi-app:{unique}"
    resources.image(ref)
    first = build_json(project, base_image, "--tag", ref, "--push")
    assert first["pushed"][ref] == first["manifest_digest"]
    docker_client.images.remove(ref, force=True)

    pulled = docker_client.images.pull(ref)
    assert pulled.id == first["image_id"], "the registry image is the one pydeploy built"
    container = resources.create(ref, environment={"PORT": str(free_port)})
    container.start()
    body = wait_http(f"http://127.0.0.1:{free_port}/")
    assert json.loads(body)["app"] == "fastapi-app"
    container.remove(force=True)

    # A second push of the same image uploads nothing: every blob is already there.
    again = cli("build", str(project), "--base", base_image, "--network", "host", "--tag", ref,
                "--output", "registry")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "(0 blobs uploaded" in again.stderr


def test_oci_layout_is_readable_by_skopeo(project: Path, base_image: str, tmp_path: Path) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        if os.environ.get("CI", "").lower() in {"1", "true"}:
            pytest.fail("skopeo is not installed (.ci/test installs it)")
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    layout = tmp_path / "layout"
    result = build_json(project, base_image, "--tag", "oci-test:1", "--output", f"oci:{layout}")
    proc = subprocess.run(
        [skopeo, "inspect", f"oci:{layout}:1"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["Digest"] == result["manifest_digest"]
    assert len(info["Layers"]) == len(result["layers"])
    assert info["Labels"]["org.opencontainers.image.title"] == "fastapi-app"
    # And copy it somewhere else, which reads and verifies every blob.
    copied = tmp_path / "copied"
    proc = subprocess.run(
        [skopeo, "copy", f"oci:{layout}:1", f"dir:{copied}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_docker_archive_output_loads_to_the_same_id(
    project: Path, base_image: str, tmp_path: Path, docker_client: docker.DockerClient,
    resources: Resources,
) -> None:  # fmt: skip
    archive = tmp_path / "image.tar"
    tag = f"pydeploy-test/archive:{uuid.uuid4().hex[:8]}"
    resources.image(tag)
    result = build_json(project, base_image, "--tag", tag, "--output", f"docker-archive:{archive}")
    with archive.open("rb") as handle:
        (loaded,) = docker_client.images.load(handle.read())
    assert loaded.id == result["image_id"]


def test_same_inputs_same_image_even_from_a_clean_cache(
    base_image: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    # A locked project: with [project] ranges the inputs include PyPI's state, and a
    # release between the two builds would (rightly) change the image.
    project = tmp_path / "uvlock_app"
    shutil.copytree(FIXTURES / "uvlock_app", project)
    first = build_json(project, base_image, "--tag", "repro:1", "--output",
                       f"oci:{tmp_path / 'a'}", cache=tmp_path / "cache-a")  # fmt: skip
    # Throw away every cache entry of this build: the stored layers and the venv volume.
    docker_client.volumes.get(first["dependencies"]["volume"]).remove(force=True)
    second = build_json(project, base_image, "--tag", "repro:1", "--output",
                        f"oci:{tmp_path / 'b'}", cache=tmp_path / "cache-b")  # fmt: skip
    assert second["dependencies"]["cached"] is False
    # Part by part first, so a difference names what differs.
    assert second["dependencies"]["pins"] == first["dependencies"]["pins"]
    assert layer_digests(second) == layer_digests(first)
    assert layout_config(tmp_path / "b") == layout_config(tmp_path / "a")
    assert second["image_id"] == first["image_id"]
    assert second["manifest_digest"] == first["manifest_digest"]
    index_a = (tmp_path / "a" / "index.json").read_bytes()
    assert index_a == (tmp_path / "b" / "index.json").read_bytes()


def test_a_no_change_rebuild_asks_the_engine_and_builds_again_when_anything_moved(
    project: Path, base_image: str, unique: str, resources: Resources,
    docker_client: docker.DockerClient,
) -> None:  # fmt: skip
    """`--output docker` with the same command, environment and files: the recorded
    result, once the engine confirms the image is still there (tagged again when asked
    for under another full reference); a removed image or an edited file builds again
    (and records again)."""
    tag = resources.image(f"pydeploy-test/unchanged:{unique}")
    first = build_json(project, base_image, "--tag", tag)
    assert "unchanged" not in first["timings"]
    again = build_json(project, base_image, "--tag", tag)
    assert list(again["timings"]) == ["unchanged"]
    assert (again["image_id"], again["layers"]) == (first["image_id"], first["layers"])
    assert again["dependencies"]["cached"] is True

    # Another full reference (CI's `app:$SHA`) is no other input: the recorded image is
    # tagged with it, and the first tag stays.
    other = resources.image(f"pydeploy-test/unchanged-other:{unique}")
    retagged = build_json(project, base_image, "--tag", other)
    assert list(retagged["timings"]) == ["unchanged"]
    assert (retagged["image_id"], retagged["tags"]) == (first["image_id"], [other])
    assert docker_client.images.get(other).id == first["image_id"]
    docker_client.images.remove(tag)  # the image stays (under `other`): tagged again
    assert list(build_json(project, base_image, "--tag", tag)["timings"]) == ["unchanged"]
    assert docker_client.images.get(tag).id == first["image_id"]

    docker_client.images.remove(first["image_id"], force=True)  # every tag: the image is gone
    reloaded = build_json(project, base_image, "--tag", tag)
    assert "unchanged" not in reloaded["timings"]
    assert docker_client.images.get(tag).id == first["image_id"]
    assert list(build_json(project, base_image, "--tag", tag)["timings"]) == ["unchanged"]

    main = project / "main.py"
    main.write_text(main.read_text().replace('"hello"', '"hello again"'))
    edited = build_json(project, base_image, "--tag", tag)
    resources.image(first["image_id"])  # untagged by the edited build
    assert "unchanged" not in edited["timings"]
    assert edited["image_id"] != first["image_id"]
    assert docker_client.images.get(tag).id == edited["image_id"]
    final = build_json(project, base_image, "--tag", tag)
    assert (list(final["timings"]), final["image_id"]) == (["unchanged"], edited["image_id"])

    # Built from a directory inside the project that planning never lists: a
    # pyproject.toml created there is a new project root, so no recorded answer.
    inner = project / "tests" / "notes"
    inner.mkdir(parents=True)
    assert list(build_json(inner, base_image, "--tag", tag)["timings"]) != ["unchanged"]
    assert list(build_json(inner, base_image, "--tag", tag)["timings"]) == ["unchanged"]
    (inner / "pyproject.toml").write_text('[project]\nname = "inner"\nversion = "1"\n')
    proc = cli("build", str(inner), "--base", base_image, "--network", "host", "--json",
               "--tag", tag, cache=None)  # fmt: skip
    assert proc.returncode != 0 or "unchanged" not in json.loads(proc.stdout)["timings"]


def test_code_only_change_rebuilds_only_the_app_layer(
    project: Path, base_image: str, tmp_path: Path
) -> None:
    out = f"oci:{tmp_path / 'out'}"
    before = build_json(project, base_image, "--tag", "code:1", "--output", out)
    main = project / "main.py"
    main.write_text(main.read_text().replace('"hello"', '"hello again"'))
    after = build_json(project, base_image, "--tag", "code:1", "--output", out)
    assert after["dependencies"]["cached"] is True
    old, new = layer_digests(before), layer_digests(after)
    changed = sorted(role for role in old if old[role] != new[role])
    assert changed == ["app"]
    assert after["image_id"] != before["image_id"]


def test_layers_hold_no_secrets_vcs_or_tests(
    project: Path, base_image: str, tmp_path: Path
) -> None:
    for name, text in {
        ".env": "SECRET=do-not-ship\n",
        ".env.local": "SECRET=do-not-ship\n",
        ".git/config": "[core]\n",
        ".venv/bin/python": "",
        "tests/test_main.py": "def test_x() -> None: ...\n",
        "__pycache__/main.cpython-311.pyc": "",
        "notes.log": "debug\n",
        ".gitignore": "*.log\n",
        "static/style.css": "body {}\n",
    }.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    layout = tmp_path / "layout"
    result = build_json(project, base_image, "--tag", "clean:1", "--output", f"oci:{layout}")
    names: set[str] = set()
    for layer in result["layers"]:
        if layer["role"] == "base":
            continue
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        with tarfile.open(blob, "r:gz") as tar:
            for member in tar:
                names.add(member.name)
                assert member.mtime == 1, member.name
                if member.name.startswith("app/"):
                    assert member.uid == 0, member.name
                    assert not member.mode & 0o022, member.name
                    assert not member.mode & 0o6000, member.name
    assert "app/main.py" in names
    assert "app/static/style.css" in names
    leaked = [n for n in names if any(
        part in {".env", ".env.local", ".git", ".venv", "tests", "__pycache__"}
        for part in n.split("/")[:2]
    ) or n.endswith(".log")]  # fmt: skip
    assert leaked == []
    everything = "\n".join(sorted(names))
    assert ".whl" not in everything
    assert "/.cache/" not in everything


def test_missing_base_image_is_named_with_a_fix(
    project: Path, docker_client: docker.DockerClient
) -> None:
    run, env = labelled_run()
    proc = cli("build", str(project), "--base", "pydeploy-no-such-base:404", "--network", "host",
               env=env)  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "pydeploy-no-such-base:404" in proc.stderr
    assert "--base" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert build_containers(docker_client, run) == []


def test_unreachable_registry_fails_cleanly(
    project: Path, base_image: str, unique: str, docker_client: docker.DockerClient,
    resources: Resources,
) -> None:  # fmt: skip
    ref = f"127.0.0.1:9/pydeploy-test/nowhere:{unique}"  # port 9 (discard): nothing listens
    resources.image(ref)
    run, env = labelled_run()
    proc = cli("build", str(project), "--base", base_image, "--network", "host", "--tag", ref,
               "--output", "registry", env=env)  # fmt: skip
    assert proc.returncode == 8, proc.stderr
    assert "127.0.0.1:9" in proc.stderr
    assert "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert build_containers(docker_client, run) == []


def test_unwritable_output_leaves_nothing(project: Path, base_image: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    target = blocker / "out.tar"
    proc = cli("build", str(project), "--base", base_image, "--network", "host",
               "--output", f"docker-archive:{target}")  # fmt: skip
    assert proc.returncode == 8, proc.stderr
    assert str(target) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fastapi-app", "not-a-dir"]


def test_bad_output_spec_is_a_config_error(project: Path) -> None:
    proc = cli("build", str(project), "--output", "s3:bucket")
    assert proc.returncode == 2
    assert "--output 's3:bucket' is not a known output" in proc.stderr


def test_inspect_shows_roles_and_sizes(
    project: Path, base_image: str, unique: str, resources: Resources
) -> None:
    tag = f"pydeploy-test/inspect:{unique}"
    resources.image(tag)
    result = build_json(project, base_image, "--tag", tag)
    proc = cli("inspect", tag, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["image_id"] == result["image_id"]
    assert info["user"] == "10001:10001"
    roles = [layer["role"] for layer in info["layers"]]
    deps = [role for role in roles if role.startswith("dependencies-")]
    assert deps[0] == "dependencies-venv"
    assert 2 <= len(deps) <= 8
    ours = [role for role in roles if role != "base" and role not in deps[1:]]
    # The test base has setuid programs (su, mount...): their bits are dropped by a layer.
    assert ours == ["no-setuid", "user", "dependencies-venv", "app", "launcher"]
    assert roles.index("no-setuid") == roles.count("base")
    sizes = {layer["role"]: layer["size"] for layer in info["layers"]}
    assert sum(sizes[role] for role in deps) > 1_000_000 > sizes["app"] > 0
    assert [la["diff_id"] for la in info["layers"] if la["role"] in deps] == [
        la["diff_id"] for la in result["layers"] if la["role"] in deps
    ]
    missing = cli("inspect", "pydeploy-test/absent:none")
    assert missing.returncode == 2
    assert "has no image `pydeploy-test/absent:none`" in missing.stderr
