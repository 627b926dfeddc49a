"""The engine connection without an engine: one clear message, no traceback; each way an
engine call fails (silence, a lost connection, a refusal) worded as what it is."""

from __future__ import annotations

import http.client
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
import requests.exceptions
import urllib3.exceptions

from pydeploy.cachekeys import CHECK_IMAGE_LABEL, OWNER_LABEL
from pydeploy.engine import owners
from pydeploy.engine.client import (
    Engine,
    container_labels,
    engine_failure,
    image_facts,
    is_podman_ping,
    is_podman_version,
    rooted_archive,
    service_host_config,
)
from pydeploy.engine.types import ImageFacts, Outcome, Published, ResourceLimits
from pydeploy.errors import ConfigError, EngineError, InterruptError


def test_no_engine_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineError) as caught:
        Engine.connect()
    message = caught.value.message
    assert caught.value.exit_code == 3
    assert f"unix://{tmp_path}/no-engine.sock" in message
    assert "DOCKER_HOST" in message
    assert "systemctl start docker" in message
    assert "\n" not in message


HOST = "unix:///run/engine.sock"


def _disconnect() -> requests.exceptions.ConnectionError:
    lost = http.client.RemoteDisconnected("Remote end closed connection without response")
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError("Connection aborted.", lost)
    )


@pytest.mark.parametrize(
    ("failure", "says", "fix"),
    [
        (
            requests.exceptions.ReadTimeout(
                "UnixHTTPConnectionPool(host='localhost', port=None): Read timed out. "
                "(read timeout=60)"
            ),
            f"The Docker engine at {HOST} stopped answering (no answer within 60 s).",
            "restart it",
        ),
        (
            urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out."),  # type: ignore[arg-type]
            f"The Docker engine at {HOST} stopped answering (no answer in time).",
            "restart it",
        ),
        (
            _disconnect(),
            (
                f"lost the connection to the Docker engine at {HOST}: the engine closed the "
                "connection without answering."
            ),
            "docker info",
        ),
        (
            urllib3.exceptions.ProtocolError(
                "Connection broken", ConnectionResetError(104, "Connection reset by peer")
            ),
            f"lost the connection to the Docker engine at {HOST}: the connection was reset.",
            "run the command again",
        ),
        (
            requests.exceptions.ConnectionError(FileNotFoundError(2, "No such file or directory")),
            f"lost the connection to the Docker engine at {HOST}: its socket is gone.",
            "start it",
        ),
        (BrokenPipeError(32, "Broken pipe"), "the connection broke.", "docker info"),
        (
            docker.errors.APIError("409 Client Error: Conflict (name in use)"),
            "The Docker engine refused an operation: 409 Client Error",
            "",
        ),
    ],
)
def test_engine_failures_are_worded_by_kind(failure: Exception, says: str, fix: str) -> None:
    error = engine_failure(failure, HOST)
    assert error.exit_code == 3
    assert says in error.message
    assert fix in error.message
    assert "\n" not in error.message
    if "refused" in says:
        assert error.hint is None
    else:
        assert "refused an operation" not in error.message


class _Client:
    """Just enough of a DockerClient for Engine's constructor and guard."""

    api = object()


def test_a_stream_that_breaks_is_an_engine_error_not_a_traceback() -> None:
    engine = Engine(_Client(), host=HOST)  # type: ignore[arg-type]

    def chunks() -> Iterator[bytes]:
        yield b"first"
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(3 bytes read)")

    stream = engine.guarded_iter(chunks())
    assert next(stream) == b"first"
    with pytest.raises(EngineError, match="closed in the middle of an answer"):
        next(stream)


def test_container_labels_from_the_environment() -> None:
    assert container_labels("") == {}
    assert container_labels(" ci.job=12 , team=a=b,") == {"ci.job": "12", "team": "a=b"}
    for bad in ("novalue", "=x", "pydeploy.build=mine"):
        with pytest.raises(ConfigError, match="PYDEPLOY_CONTAINER_LABELS"):
            container_labels(bad)


# --- domain values in, typed facts out ------------------------------------------------


MIB = 1024 * 1024


def test_service_limits_become_the_engine_s_hard_and_soft_values() -> None:
    limits = ResourceLimits(cpus=1.5, memory_mib=512, cpu_request=0.25, memory_request_mib=256)
    config = service_host_config("bridge", Published(8000, 9123), limits)
    assert config == {
        "network_mode": "bridge",
        "init": False,
        "port_bindings": {8000: ("127.0.0.1", 9123)},  # loopback only
        "nano_cpus": 1_500_000_000,
        "mem_limit": 512 * MIB,
        "memswap_limit": 512 * MIB,  # no swap beyond the limit
        "cpu_shares": 256,
        "mem_reservation": 256 * MIB,
    }


def test_a_service_without_limits_or_ports_gets_none() -> None:
    assert service_host_config("host", None, ResourceLimits()) == {
        "network_mode": "host",
        "init": False,
    }
    tiny = service_host_config("host", None, ResourceLimits(cpu_request=0.001))
    assert tiny["cpu_shares"] == 2, "the engine's minimum weight"


def test_image_facts_read_the_inspect_document() -> None:
    facts = image_facts(
        {
            "Id": "sha256:abc",
            "RepoDigests": ["python@sha256:def"],
            "Created": "2024-05-01T10:00:00.123456789Z",
            "Architecture": "arm64",
            "Config": {
                "Env": ["PATH=/bin", "LANG=C.UTF-8"],
                "Cmd": ["python3"],
                "Entrypoint": None,
                "WorkingDir": "/app",
                "User": "1000",
                "Labels": {"a": "1"},
            },
            "RootFS": {"Type": "layers", "Layers": ["sha256:l1", "sha256:l2"]},
        }
    )
    assert facts == ImageFacts(
        image_id="sha256:abc",
        repo_digests=("python@sha256:def",),
        labels={"a": "1"},
        env=("PATH=/bin", "LANG=C.UTF-8"),
        cmd=("python3",),
        entrypoint=(),
        workdir="/app",
        user="1000",
        created=1714557600.0,
        architecture="arm64",
        diff_ids=("sha256:l1", "sha256:l2"),
    )
    # An image without a config (a scratch import) has empty facts, not a KeyError.
    assert image_facts({"Id": "sha256:x", "Config": None}) == ImageFacts("sha256:x")


class _Closable:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class _ClosingClient(_Closable):
    def __init__(self, state: dict[str, object] | None = None) -> None:
        super().__init__()
        self.api = _InspectingApi(state or {})


class _InspectingApi(_Closable):
    def __init__(self, state: dict[str, object]) -> None:
        super().__init__()
        self.state = state
        self.inspected = 0

    def inspect_container(self, _ident: str) -> dict[str, object]:
        self.inspected += 1
        return {"State": self.state}


def test_an_engine_block_removes_its_containers_and_closes_its_connections() -> None:
    client, slow = _ClosingClient(), _Closable()
    with Engine(client, host=HOST, slow=slow) as engine:  # type: ignore[arg-type]
        engine.raise_if_stopping()  # usable inside
    assert (client.closed, slow.closed) == (1, 1)
    with pytest.raises(InterruptError):
        engine.raise_if_stopping()  # cleanup() ran: no container may start after it
    engine.close()  # closing again is harmless


def test_only_a_failed_container_is_asked_whether_it_was_oom_killed() -> None:
    client = _ClosingClient({"OOMKilled": True, "ExitCode": 137})
    engine = Engine(client, host=HOST)  # type: ignore[arg-type]
    assert engine.outcome("c1", 0) == Outcome(0)
    assert client.api.inspected == 0
    assert engine.outcome("c1", 137) == Outcome(137, oom_killed=True)
    client.api.state = {"OOMKilled": False}
    assert engine.outcome("c1", 1) == Outcome(1, oom_killed=False)


class _ImagesApi:
    """containers() and images() summaries, and what remove_image was asked to remove."""

    def __init__(self, images: list[dict[str, object]]) -> None:
        self.listed = images
        self.filters: list[object] = []
        self.removed: list[str] = []

    def containers(self, **_kwargs: object) -> list[object]:
        return []

    def images(self, *, all: bool, filters: dict[str, str]) -> list[dict[str, object]]:
        assert all
        self.filters.append(filters)
        return [i for i in self.listed if filters["label"] in i["Labels"]]  # type: ignore[operator]

    def remove_image(self, ident: str) -> None:
        self.removed.append(ident)


def test_reaping_removes_only_untagged_check_images_of_dead_owners_on_this_host() -> None:
    me = owners.this_process()
    dead = owners.Owner(me.host, 999_999_999, "1").label()
    elsewhere = owners.Owner("another-host", 1, "1").label()

    def image(
        ident: str, owner: str, *, check: bool = True, tags: tuple[str, ...] = ()
    ) -> dict[str, object]:
        labels = {OWNER_LABEL: owner, **({CHECK_IMAGE_LABEL: "1"} if check else {})}
        return {"Id": ident, "Labels": labels, "RepoTags": list(tags) or ["<none>:<none>"]}

    api = _ImagesApi(
        [
            image("dead-check", dead),
            image("live-check", me.label()),
            image("other-host-check", elsewhere),
            image("tagged", dead, tags=("shop:1",)),
            # A builder image committed from a dead owner's container keeps its labels.
            image("builder", dead, check=False, tags=("pydeploy-builder:abc",)),
        ]
    )
    client = _Client()
    client.api = api
    Engine(client, host=HOST).reap_orphans()  # type: ignore[arg-type]
    assert api.removed == ["dead-check"]
    assert api.filters == [{"label": CHECK_IMAGE_LABEL}]


def _tar(members: list[tuple[str, bytes | None]], *, link: tuple[str, str] | None = None) -> bytes:
    """A tar of directories (None) and files, plus an optional hard link (name, target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.LNKTYPE, link[1]
            tar.addfile(info)
    return buffer.getvalue()


def _read(chunks: Iterator[bytes]) -> list[tuple[str, bytes | str | None]]:
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        out: list[tuple[str, bytes | str | None]] = []
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            out.append((member.name, handle.read() if handle else member.linkname or None))
        return out


def test_podman_s_mount_point_archive_is_rooted_like_docker_s() -> None:
    # Podman's GET /containers/{id}/archive?path=/opt/venv when /opt/venv is a volume.
    podman = _tar(
        [("", None), ("/bin", None), ("/bin/tool", b"x" * 70_000), ("/pyvenv.cfg", b"home")],
        link=("/bin/same", "/bin/tool"),
    )
    chunks = [podman[i : i + 4096] for i in range(0, len(podman), 4096)]
    assert _read(rooted_archive(chunks, "venv")) == [
        ("venv", None),
        ("venv/bin", None),
        ("venv/bin/tool", b"x" * 70_000),
        ("venv/pyvenv.cfg", b"home"),
        ("venv/bin/same", "venv/bin/tool"),
    ]
    # Docker's layout (and Podman's for a path that is no mount point) passes unchanged,
    # even an entry named like a root further in.
    docker_layout = _tar([("venv", None), ("venv/a", b"1"), ("./", None), ("./venv/b", b"2")])
    assert [name for name, _ in _read(rooted_archive([docker_layout], "venv"))] == [
        "venv",
        "venv/a",
        ".",
        "./venv/b",
    ]


def test_podman_is_told_apart_by_its_version_document() -> None:
    podman = {"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}], "Version": "4.3.1"}
    moby = {"Components": [{"Name": "Engine", "Version": "26.1.5"}], "Version": "26.1.5"}
    assert is_podman_version(podman) is True
    assert is_podman_version(moby) is False
    assert is_podman_version({}) is False
    # The connection's ping tells them apart without that (slow, on Podman) request.
    assert is_podman_ping({"Server": "Libpod/4.3.1 (linux)", "Api-Version": "1.41"}) is True
    assert is_podman_ping({"libpod-api-version": "4.3.1"}) is True
    assert is_podman_ping({"Server": "Docker/20.10.24+dfsg1 (linux)"}) is False


def test_a_refused_rlimit_names_the_cause_and_the_containers_conf_fix() -> None:
    refused = docker.errors.APIError(
        "500 Server Error: Internal Server Error",
        explanation="runc: runc create failed: unable to start container process: error during "
        "container init: error setting rlimits for ready process: error setting rlimit type 7: "
        "operation not permitted: OCI permission denied",
    )
    error = engine_failure(refused, HOST)
    assert error.exit_code == 3
    assert "open-files limit" in error.message
    assert "default_ulimits = []" in error.message
    assert "containers.conf" in error.message
    assert "\n" not in error.message
