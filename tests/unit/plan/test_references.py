"""Image references: the one parser's views of a name, as the engine, publishers and
manifests use them (ports in registry hosts, digests, tags, Docker Hub names)."""

from __future__ import annotations

import pytest

from pydeploy.deploy.manifests import check_digest_ref
from pydeploy.errors import ConfigError
from pydeploy.plan.references import parse_reference, registry_host, try_parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "familiar", "target"),
    [
        ("python:3.12-slim", "python", "3.12-slim"),
        ("docker.io/library/python", "python", "latest"),
        ("index.docker.io/team/app:1", "team/app", "1"),
        ("127.0.0.1:5000/team/app:1.0", "127.0.0.1:5000/team/app", "1.0"),
        ("localhost:5000/app", "localhost:5000/app", "latest"),
        ("[::1]:5000/app:v2", "[::1]:5000/app", "v2"),
        (f"ghcr.io/o/app:1@{DIGEST}", "ghcr.io/o/app", DIGEST),
        (f"127.0.0.1:5000/app@{DIGEST}", "127.0.0.1:5000/app", DIGEST),
    ],
)
def test_familiar_name_and_pull_target(text: str, familiar: str, target: str) -> None:
    ref = parse_reference(text)
    assert (ref.familiar, ref.target) == (familiar, target)


@pytest.mark.parametrize(
    ("registry", "host"),
    [
        ("127.0.0.1:5000", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:5000", "::1"),
        ("::1", "::1"),
        ("registry.example:443", "registry.example"),
    ],
)
def test_registry_host_drops_the_port(registry: str, host: str) -> None:
    assert registry_host(registry) == host


def test_reference_hostname() -> None:
    assert parse_reference("[::1]:5000/app:1").hostname == "::1"
    assert parse_reference("python").hostname == "registry-1.docker.io"


def test_try_parse_is_none_for_what_engines_report_that_is_no_name() -> None:
    assert try_parse("<none>:<none>") is None
    assert try_parse("Upper/Case:1") is None
    found = try_parse(f"127.0.0.1:5000/app@{DIGEST}")
    assert found is not None
    assert (found.tag, found.digest) == (None, DIGEST)


def test_a_digest_ref_needs_a_valid_name_and_a_digest() -> None:
    assert check_digest_ref(f"127.0.0.1:5000/app:1@{DIGEST}").endswith(DIGEST)
    for bad in ("127.0.0.1:5000/app:1", f"Bad Name@{DIGEST}", "app@sha256:abc"):
        with pytest.raises(ConfigError, match="not pinned by digest"):
            check_digest_ref(bad)
