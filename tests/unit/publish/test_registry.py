"""Registry client logic without a registry: reference parsing, scheme choice, challenge
parsing, credential lookup (env, Docker config, a real helper program on PATH), and the
auth and error paths against a small in-process HTTP server speaking the v2 protocol."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests.adapters

from pydeploy.errors import ConfigError, PublishError, RegistryAuthError
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.config import MEDIA_TYPE_MANIFEST, ImageSettings, build_config, rfc3339
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import Image
from pydeploy.oci.layer import build_layer
from pydeploy.plan.references import DOCKER_HUB, Reference, parse_reference
from pydeploy.publish import registry

DIGEST = "sha256:" + "a" * 64
SECRET = "s3cr3t-Pa55"  # noqa: S105 - a test value that must never leak


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/team/app:1.0", Reference("127.0.0.1:5000", "team/app", "1.0")),
        ("python", Reference(DOCKER_HUB, "library/python", "latest")),
        ("python:3.12-slim", Reference(DOCKER_HUB, "library/python", "3.12-slim")),
        ("docker.io/library/python:3", Reference(DOCKER_HUB, "library/python", "3")),
        ("index.docker.io/user/app", Reference(DOCKER_HUB, "user/app", "latest")),
        ("user/app", Reference(DOCKER_HUB, "user/app", "latest")),
        ("localhost/app", Reference("localhost", "app", "latest")),
        ("localhost:5000/app@" + DIGEST, Reference("localhost:5000", "app", None, DIGEST)),
        ("ghcr.io/org/app:v1@" + DIGEST, Reference("ghcr.io", "org/app", "v1", DIGEST)),
        ("[::1]:5000/app:x", Reference("[::1]:5000", "app", "x")),
        ("reg.example.com/a/b/c", Reference("reg.example.com", "a/b/c", "latest")),
        ("a.b:443/my_app/x-y__z:T_1.2-3", Reference("a.b:443", "my_app/x-y__z", "T_1.2-3")),
    ],
)
def test_parse_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "App:1", "app:bad tag", "app@sha256:abc", "host:5000/", "a//b", "app:-x", "a_/b"],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(ConfigError, match="not a valid image reference"):
        parse_reference(text)


def test_reference_str_round_trips() -> None:
    for text in ("127.0.0.1:5000/team/app:1.0", f"ghcr.io/org/app:v1@{DIGEST}"):
        assert str(parse_reference(text)) == text
    assert parse_reference(f"x.io/a@{DIGEST}").target == DIGEST


@pytest.mark.parametrize(
    ("registry_name", "insecure", "scheme"),
    [
        ("127.0.0.1:5000", "", "http"),
        ("localhost", "", "http"),
        ("[::1]:5000", "", "http"),
        ("127.0.0.2:5000", "", "http"),
        ("128.0.0.1:5000", "", "https"),
        ("reg.example.com", "", "https"),
        ("reg.example.com:5000", "reg.example.com:5000", "http"),
        ("reg.example.com:5000", "other.io, reg.example.com", "http"),
        ("reg.example.com:5000", "other.io:5000", "https"),
    ],
)
def test_registry_scheme(registry_name: str, insecure: str, scheme: str) -> None:
    env = {"PYDEPLOY_INSECURE_REGISTRIES": insecure}
    assert registry.registry_scheme(registry_name, env) == scheme


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        (
            ('Bearer realm="https://auth.io/token",service="reg.io",'
             'scope="repository:a/b:pull,push"'),
            "bearer",
            {"realm": "https://auth.io/token", "service": "reg.io",
             "scope": "repository:a/b:pull,push"},
        ),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("basic realm=plain", "basic", {"realm": "plain"}),
        ('Bearer realm="a \\"quoted\\" realm", error="insufficient_scope"', "bearer",
         {"realm": 'a "quoted" realm', "error": "insufficient_scope"}),
        ("", "", {}),
    ],
)  # fmt: skip
def test_parse_www_authenticate(header: str, scheme: str, params: dict[str, str]) -> None:
    assert registry.parse_www_authenticate(header) == (scheme, params)


# --------------------------------------------------------------------------- credentials


def auth_entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def write_config(directory: Path, config: dict[str, Any]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(directory), "PATH": "/usr/bin:/bin"}


def fake_helper(bin_dir: Path, name: str, known: dict[str, tuple[str, str]]) -> Path:
    """A real `docker-credential-<name>` program: answers `get` for the servers it knows
    and logs every server it was asked about."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / f"{name}.log"
    answers = {s: {"ServerURL": s, "Username": u, "Secret": p} for s, (u, p) in known.items()}
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"answers = {answers!r}\n"
        "server = sys.stdin.read().strip()\n"
        f"open({str(log)!r}, 'a').write(server + '\\n')\n"
        "if sys.argv[1:] != ['get'] or server not in answers:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(answers[server]))\n"
    )
    script.chmod(0o755)
    return log


def test_env_vars_come_first(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {"127.0.0.1:5000": auth_entry("cfg", "cfgpw")}})
    env |= {"PYDEPLOY_REGISTRY_USERNAME": "envuser", "PYDEPLOY_REGISTRY_PASSWORD": SECRET}
    creds = registry.find_credentials("127.0.0.1:5000", env).credentials
    assert creds is not None
    assert (creds.username, creds.password) == ("envuser", SECRET)
    assert "PYDEPLOY_REGISTRY_USERNAME" in creds.source
    assert SECRET not in repr(creds)


def test_auths_entry_and_docker_hub_key(tmp_path: Path) -> None:
    env = write_config(
        tmp_path,
        {
            "auths": {
                "http://127.0.0.1:5000": auth_entry("local", "pw1"),
                "https://index.docker.io/v1/": auth_entry("hubuser", "pw2"),
                "other.io": {"username": "u3", "password": "pw3"},
            }
        },
    )
    found = {
        name: registry.find_credentials(name, env).credentials
        for name in ("127.0.0.1:5000", DOCKER_HUB, "other.io", "missing.io")
    }
    pairs = {k: (v.username, v.password) if v else None for k, v in found.items()}
    assert pairs == {
        "127.0.0.1:5000": ("local", "pw1"),
        DOCKER_HUB: ("hubuser", "pw2"),
        "other.io": ("u3", "pw3"),
        "missing.io": None,
    }
    creds = found["127.0.0.1:5000"]
    assert creds is not None
    assert str(tmp_path / "config.json") in creds.source


def test_credential_helpers_on_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    per_host = fake_helper(bin_dir, "perhost", {"reg.io": ("helper-user", SECRET)})
    store = fake_helper(bin_dir, "store", {"https://index.docker.io/v1/": ("hub", "hubpw")})
    env = write_config(
        tmp_path / "cfg",
        {
            "credHelpers": {"reg.io": "perhost"},
            "credsStore": "store",
            "auths": {"fallback.io": auth_entry("fb", "fbpw"), "reg.io": {}},
        },
    )
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    creds = registry.find_credentials("reg.io", env).credentials
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == (
        "helper-user",
        SECRET,
        "docker-credential-perhost",
    )
    hub = registry.find_credentials(DOCKER_HUB, env).credentials
    assert hub is not None
    assert (hub.username, hub.password) == ("hub", "hubpw")
    # the store knows nothing of fallback.io: the auths entry is used instead
    fallback = registry.find_credentials("fallback.io", env)
    assert fallback.credentials is not None
    assert fallback.credentials.username == "fb"
    assert per_host.read_text().splitlines() == ["reg.io"]
    assert store.read_text().splitlines() == ["https://index.docker.io/v1/", "fallback.io"]


def test_missing_helper_is_reported_not_fatal(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"credsStore": "desktop-nowhere"})
    lookup = registry.find_credentials("reg.io", env)
    assert lookup.credentials is None
    assert any("docker-credential-desktop-nowhere is not on PATH" in n for n in lookup.notes)


def test_no_config_file(tmp_path: Path) -> None:
    lookup = registry.find_credentials("reg.io", {"DOCKER_CONFIG": str(tmp_path / "none")})
    assert lookup.credentials is None
    assert str(tmp_path / "none" / "config.json") in lookup.notes[0]


# The docker SDK's resolve_authconfig/Store differ on each of these (see find_credentials).


def test_a_helper_miss_falls_back_to_the_store(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    per_host = fake_helper(bin_dir, "perhost", {})
    fake_helper(bin_dir, "store", {"reg.io": ("from-store", SECRET)})
    env = write_config(tmp_path / "cfg", {"credHelpers": {"reg.io": "perhost"},
                                          "credsStore": "store"})  # fmt: skip
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    lookup = registry.find_credentials("reg.io", env)
    assert lookup.credentials is not None
    assert lookup.credentials.source == "docker-credential-store"
    assert per_host.read_text().splitlines() == ["reg.io"]
    assert lookup.notes == ("docker-credential-perhost has no credentials for reg.io",)


def test_config_keys_match_by_host_and_hub_alias(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_helper(bin_dir, "perhost", {"reg.io": ("helper-user", SECRET)})
    env = write_config(
        tmp_path / "cfg",
        {
            "credHelpers": {"https://reg.io": "perhost"},
            "auths": {"docker.io": auth_entry("hub", "pw")},
        },
    )
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    helped = registry.find_credentials("reg.io", env).credentials
    assert helped is not None
    assert helped.username == "helper-user"
    hub = registry.find_credentials(DOCKER_HUB, env).credentials
    assert hub is not None
    assert hub.username == "hub"


def test_an_identity_token_keeps_the_entry_s_username(tmp_path: Path) -> None:
    entry = {**auth_entry("user", "pw"), "identitytoken": "refresh"}
    env = write_config(tmp_path, {"auths": {"reg.io": entry, "tok.io": {"identitytoken": "t"}}})
    creds = registry.find_credentials("reg.io", env).credentials
    assert creds is not None
    assert (creds.username, creds.password, creds.identity_token) == ("user", "pw", "refresh")
    token_only = registry.find_credentials("tok.io", env).credentials
    assert token_only is not None
    assert (token_only.username, token_only.identity_token) == ("", "t")


@pytest.mark.parametrize(
    "entry",
    [
        {"auth": "!!not-base64"},
        {"auth": base64.b64encode(b"no-colon").decode()},
        {"auth": base64.b64encode(b"\xff:\xfe").decode()},
        "not an object",
    ],
)
def test_a_malformed_auths_entry_is_unusable_not_fatal(tmp_path: Path, entry: object) -> None:
    env = write_config(tmp_path, {"auths": {"reg.io": entry}})
    lookup = registry.find_credentials("reg.io", env)
    assert lookup.credentials is None
    assert lookup.notes == (f"no entry for reg.io in {tmp_path / 'config.json'}",)


def test_a_helper_that_never_answers_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "bin" / "docker-credential-stuck"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexec sleep 30\n")
    script.chmod(0o755)
    env = write_config(tmp_path / "cfg", {"credsStore": "stuck"})
    env["PATH"] = f"{script.parent}:/usr/bin:/bin"
    monkeypatch.setattr(registry, "HELPER_TIMEOUT", 0.5)
    started = time.monotonic()
    lookup = registry.find_credentials("reg.io", env)
    assert time.monotonic() - started < 10
    assert lookup.credentials is None
    assert "the credential helper docker-credential-stuck failed (TimeoutExpired)" in lookup.notes


# --------------------------------------------------------------------------- HTTP flows

Handler = Callable[["FakeRequest"], tuple[int, dict[str, str], bytes]]


@dataclass
class FakeRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeServer:
    address: str
    requests: list[FakeRequest] = field(default_factory=list)


@pytest.fixture
def fake_registry(request: pytest.FixtureRequest) -> Iterator[Callable[[Handler], FakeServer]]:
    """Start in-process HTTP servers on loopback; each request goes to `handler`."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: Handler) -> FakeServer:
        record = FakeServer("")

        class RequestHandler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake = FakeRequest(self.command, self.path, dict(self.headers), body)
                record.requests.append(fake)
                status, headers, payload = handler(fake)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = _serve  # noqa: N815

            def log_message(self, *_args: Any) -> None:
                return  # keep test output quiet

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        record.address = f"127.0.0.1:{server.server_address[1]}"
        return record

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


MANIFEST = b'{"schemaVersion":2}'


def basic_handler(user: str, password: str) -> Handler:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def handle(req: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("Authorization") != expected:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        return 200, {"Content-Type": MEDIA_TYPE_MANIFEST}, MANIFEST

    return handle


def env_with(user: str, password: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PYDEPLOY_REGISTRY_USERNAME": user,
        "PYDEPLOY_REGISTRY_PASSWORD": password,
        "DOCKER_CONFIG": str(tmp_path),
    }


def test_basic_auth_flow(fake_registry: Callable[[Handler], FakeServer], tmp_path: Path) -> None:
    server = fake_registry(basic_handler("alice", SECRET))
    ref = f"{server.address}/team/app:1"
    fetched = registry.fetch_manifest(ref, environ=env_with("alice", SECRET, tmp_path))
    assert fetched.data == MANIFEST
    assert fetched.media_type == MEDIA_TYPE_MANIFEST
    assert [r.headers.get("Authorization") is None for r in server.requests] == [True, False]


def test_wrong_or_missing_credentials(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    server = fake_registry(basic_handler("alice", SECRET))
    ref = f"{server.address}/team/app:1"
    with pytest.raises(RegistryAuthError) as wrong:
        registry.fetch_manifest(ref, environ=env_with("alice", "not-" + SECRET, tmp_path))
    message = wrong.value.message
    assert server.address in message
    assert "PYDEPLOY_REGISTRY_USERNAME" in message
    assert str(tmp_path / "config.json") in message
    assert "docker login" in message
    assert SECRET not in message
    assert "alice" not in message
    with pytest.raises(RegistryAuthError, match="none were found") as missing:
        registry.fetch_manifest(ref, environ={"DOCKER_CONFIG": str(tmp_path)})
    assert wrong.value.exit_code == missing.value.exit_code == 9


def test_bearer_token_flow(fake_registry: Callable[[Handler], FakeServer], tmp_path: Path) -> None:
    tokens = fake_registry(
        lambda req: (
            (200, {}, json.dumps({"token": "t0k"}).encode())
            if req.headers.get("Authorization")
            == "Basic " + base64.b64encode(f"bob:{SECRET}".encode()).decode()
            else (401, {}, b"")
        )
    )

    def handle(req: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if req.headers.get("Authorization") != "Bearer t0k":
            challenge = (
                f'Bearer realm="http://{tokens.address}/token",service="fake",'
                f'scope="repository:team/app:pull"'
            )
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Content-Type": MEDIA_TYPE_MANIFEST}, MANIFEST

    server = fake_registry(handle)
    fetched = registry.fetch_manifest(
        f"{server.address}/team/app:1", environ=env_with("bob", SECRET, tmp_path)
    )
    assert fetched.data == MANIFEST
    [token_request] = tokens.requests
    assert "service=fake" in token_request.path
    assert "scope=repository%3Ateam%2Fapp%3Apull" in token_request.path
    with pytest.raises(RegistryAuthError):
        registry.fetch_manifest(
            f"{server.address}/team/app:1", environ=env_with("bob", "wrong", tmp_path)
        )


def test_registry_error_json_is_reported(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    server = fake_registry(lambda _req: (404, {}, body.encode()))
    with pytest.raises(PublishError, match="HTTP 404") as caught:
        registry.fetch_manifest(f"{server.address}/team/app:1", environ={})
    assert "MANIFEST_UNKNOWN: manifest unknown" in caught.value.message
    assert not isinstance(caught.value, RegistryAuthError)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_registry() -> None:
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(PublishError) as caught:
        registry.fetch_manifest(f"{address}/team/app:1", environ={})
    message = caught.value.message
    assert f"registry {address} is unreachable" in message
    assert "Connection refused" in message
    # A loopback registry is spoken to over plain HTTP already: no insecure-registry hint.
    assert "PYDEPLOY_INSECURE_REGISTRIES" not in message


def test_unreachable_https_registry_suggests_plain_http() -> None:
    with pytest.raises(PublishError) as caught:  # .invalid never resolves (RFC 2606)
        registry.fetch_manifest("registry.invalid:5000/team/app:1", environ={})
    message = caught.value.message
    assert "registry registry.invalid:5000 is unreachable" in message
    assert "PYDEPLOY_INSECURE_REGISTRIES=registry.invalid:5000" in message


def test_requests_are_bounded_and_retried_with_backoff() -> None:
    client = registry.RegistryClient(parse_reference("127.0.0.1:1/team/app:1"), environ={})
    adapter = client._session.get_adapter("http://127.0.0.1:1/v2/")
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    policy = adapter.max_retries
    assert client._timeouts == (10.0, 60.0)
    assert (policy.connect, policy.read, policy.status) == (3, 2, 3)
    assert set(policy.status_forcelist) == {429, 500, 502, 503, 504}
    assert set(policy.allowed_methods or ()) == {"HEAD", "GET", "PUT", "POST"}
    assert policy.backoff_factor > 0
    assert policy.raise_on_status is False
    assert policy.parse_retry_after("3600") == 30.0  # a registry cannot stall us for an hour
    assert client._session.get_adapter("https://reg.io/v2/") is adapter
    client.close()


def test_registry_read_timeout_from_the_environment() -> None:
    assert registry.timeouts({"PYDEPLOY_REGISTRY_TIMEOUT": "300"}) == (10.0, 300.0)
    for bad in ("soon", "0", "-5", "inf", "nan"):
        with pytest.raises(ConfigError, match="PYDEPLOY_REGISTRY_TIMEOUT"):
            registry.timeouts({"PYDEPLOY_REGISTRY_TIMEOUT": bad})


def test_a_503_is_retried(fake_registry: Callable[[Handler], FakeServer]) -> None:
    answers = iter([(503, {}, b""), (200, {"Content-Type": MEDIA_TYPE_MANIFEST}, MANIFEST)])
    server = fake_registry(lambda _req: next(answers))
    fetched = registry.fetch_manifest(f"{server.address}/team/app:1", environ={})
    assert fetched.data == MANIFEST
    assert len(server.requests) == 2


def mount_handler(*, mounts: bool) -> Callable[[FakeRequest], tuple[int, dict[str, str], bytes]]:
    """A registry where no blob exists yet; a mount succeeds when `mounts`."""

    def handle(req: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if req.method == "HEAD":
            return 404, {}, b""
        if req.method == "POST":
            if "mount=" in req.path and mounts:
                return 201, {"Location": "/v2/team/b/blobs/x"}, b""
            return 202, {"Location": "/v2/team/b/blobs/uploads/u1?_state=s"}, b""
        return 201, {}, b""

    return handle


def test_blob_held_elsewhere_is_mounted(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    server = fake_registry(mount_handler(mounts=True))
    image = tiny_image(tmp_path)
    locations = registry.BlobLocations(tmp_path / "cache")
    locations.record(server.address, "team/a", [image.layers[0].digest])
    events: list[registry.PushEvent] = []
    registry.push(image, f"{server.address}/team/b:1", progress=events.append,
                  environ={}, locations=locations)  # fmt: skip
    kinds = {e.digest: e.kind for e in events if e.kind in {"mounted", "uploaded"}}
    assert kinds == {image.layers[0].digest: "mounted", image.config_digest: "uploaded"}
    [mount] = [r for r in server.requests if "mount=" in r.path]
    assert "from=team%2Fa" in mount.path
    uploads = [r.path for r in server.requests if r.method == "PUT" and "/blobs/" in r.path]
    assert len(uploads) == 1  # the config only
    assert locations.sources(server.address, image.config_digest) == ["team/b"]
    assert locations.sources(server.address, image.layers[0].digest) == ["team/b", "team/a"]


def test_a_refused_mount_uploads_into_the_session_it_opened(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    server = fake_registry(mount_handler(mounts=False))
    image = tiny_image(tmp_path)
    locations = registry.BlobLocations(tmp_path / "cache")
    locations.record(server.address, "team/gone", [image.layers[0].digest])
    events: list[registry.PushEvent] = []
    registry.push(image, f"{server.address}/team/b:1", progress=events.append,
                  environ={}, locations=locations)  # fmt: skip
    assert {e.kind for e in events if e.digest == image.layers[0].digest} == {
        "uploading",
        "uploaded",
    }
    hex_digest = image.layers[0].digest.split(":", 1)[1]  # the query part is URL-encoded
    layer_requests = [r for r in server.requests if hex_digest in r.path]
    assert [r.method for r in layer_requests] == ["HEAD", "POST", "PUT"]  # no second POST
    assert layer_requests[2].path.startswith("/v2/team/b/blobs/uploads/u1?_state=s&digest=")


def test_blob_locations_keep_the_newest(tmp_path: Path) -> None:
    locations = registry.BlobLocations(tmp_path)
    for repo in ("r1", "r2", "r3", "r4", "r5", "r2"):
        locations.record("reg:5000", repo, [DIGEST])
    assert locations.sources("reg:5000", DIGEST) == ["r2", "r5", "r4", "r3"]
    assert locations.sources("other:5000", DIGEST) == []
    (tmp_path / registry.BlobLocations.FILE).write_text("not json")
    assert locations.sources("reg:5000", DIGEST) == []  # a damaged record is no record


def tiny_image(tmp_path: Path, layer_count: int = 1) -> Image:
    store = BlobStore(tmp_path / "store")
    layers = [
        build_layer(
            [FileEntry(f"hello{i}", "file", 0o644, data=b"hi")], store=store, epoch=0, role="app"
        )
        for i in range(layer_count)
    ]
    config = build_config(
        {},
        [],
        [],
        layers,
        ImageSettings(
            user="1",
            env={},
            entrypoint=["/hello"],
            cmd=None,
            workdir="/",
            exposed_ports=[],
            labels={},
            stop_signal="SIGTERM",
            healthcheck=None,
            created=rfc3339(0),
        ),
    )
    return Image.from_config(store, config, layers)


def test_push_refuses_a_rewritten_manifest(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    def handle(req: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if req.method == "HEAD":
            return 200, {}, b""  # every blob "exists"
        return 201, {"Docker-Content-Digest": DIGEST}, b""

    server = fake_registry(handle)
    image = tiny_image(tmp_path)
    events: list[registry.PushEvent] = []
    with pytest.raises(PublishError, match="rewrote it"):
        registry.push(image, f"{server.address}/team/app:1", progress=events.append, environ={})
    assert {e.kind for e in events} == {"exists"}
    put = server.requests[-1]
    assert put.method == "PUT"
    assert put.path == "/v2/team/app/manifests/1"
    assert put.headers["Content-Type"] == MEDIA_TYPE_MANIFEST
    assert put.body == image.manifest


def test_push_refuses_a_foreign_pinned_digest(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="pins digest"):
        registry.push(tiny_image(tmp_path), f"127.0.0.1:1/app@{DIGEST}", environ={})


def test_blobs_are_checked_and_uploaded_four_at_a_time(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    image = tiny_image(tmp_path, layer_count=6)
    arrived = threading.Condition()
    heads = {"in_flight": 0, "most": 0, "seen": 0}

    def handle(req: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if req.method == "HEAD":
            with arrived:
                heads["seen"] += 1
                if heads["seen"] == 1:
                    return 404, {}, b""  # the first blob goes alone (it authenticates)
                heads["in_flight"] += 1
                heads["most"] = max(heads["most"], heads["in_flight"])
                arrived.notify_all()
                # Held until four are under way at once (a sequential push never gets
                # there; the bound only keeps a broken one from hanging the test).
                arrived.wait_for(lambda: heads["most"] >= registry.PARALLEL_BLOBS, timeout=10)
                heads["in_flight"] -= 1
            return 404, {}, b""
        if req.method == "POST":
            return 202, {"Location": "/v2/team/app/blobs/uploads/u"}, b""
        if "/manifests/" in req.path:
            return 201, {"Docker-Content-Digest": image.registry_manifest_digest()}, b""
        return 201, {}, b""

    server = fake_registry(handle)
    events: list[registry.PushEvent] = []
    registry.push(image, f"{server.address}/team/app:1", progress=events.append, environ={})
    assert heads["most"] == registry.PARALLEL_BLOBS
    uploaded = sorted(e.digest for e in events if e.kind == "uploaded")
    assert uploaded == sorted([*(la.digest for la in image.layers), image.config_digest])
    assert events[-1].kind == "manifest"


def test_a_failed_upload_among_parallel_ones_fails_the_push_before_the_manifest(
    fake_registry: Callable[[Handler], FakeServer], tmp_path: Path
) -> None:
    image = tiny_image(tmp_path, layer_count=6)
    bad = image.layers[3].digest.split(":", 1)[1]

    def handle(req: FakeRequest) -> tuple[int, dict[str, str], bytes]:
        if req.method == "HEAD":
            return 404, {}, b""
        if req.method == "POST":
            return 202, {"Location": "/v2/team/app/blobs/uploads/u"}, b""
        if bad in req.path:
            return 400, {}, b'{"errors": [{"code": "DIGEST_INVALID", "message": "bad"}]}'
        return 201, {}, b""

    server = fake_registry(handle)
    with pytest.raises(PublishError, match="DIGEST_INVALID"):
        registry.push(image, f"{server.address}/team/app:1", environ={})
    assert not [r for r in server.requests if "/manifests/" in r.path]
