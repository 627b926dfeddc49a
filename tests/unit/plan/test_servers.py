"""The server table (plan/servers.py): what each server needs and serves, how `auto`
resolves, and the copies the stdlib-only container programs keep of it."""

from __future__ import annotations

from typing import get_args

import pytest

from pydeploy.config.models import ServerConfig
from pydeploy.payload import launcher
from pydeploy.plan import servers


@pytest.mark.parametrize(
    ("server", "packages"),
    [
        ("gunicorn", ("gunicorn", "uvicorn", "httptools", "uvicorn-worker>=0.4,<0.5", "a2wsgi")),
        ("gunicorn-uvicorn", ("gunicorn", "uvicorn", "httptools", "uvicorn-worker>=0.4,<0.5")),
        ("uvicorn", ("uvicorn", "httptools")),
        ("auto", ("gunicorn", "uvicorn", "httptools", "uvicorn-worker>=0.4,<0.5", "a2wsgi")),
    ],
)
def test_server_packages(server: str, packages: tuple[str, ...]) -> None:
    assert servers.packages(server) == packages


def test_sync_wsgi_worker_needs_only_gunicorn() -> None:
    assert servers.packages("gunicorn", "sync") == ("gunicorn",)
    asgi = servers.packages("gunicorn-uvicorn")
    assert servers.packages("gunicorn-uvicorn", "sync") == asgi
    # `auto` keeps both candidates ready whatever the WSGI worker.
    assert servers.packages("auto", "sync") == servers.packages("auto")


@pytest.mark.parametrize(
    ("configured", "interface", "server"),
    [
        ("auto", "wsgi", "gunicorn"),
        ("auto", "asgi", "gunicorn-uvicorn"),
        ("auto", "auto", "auto"),
        ("uvicorn", "asgi", "uvicorn"),
        ("gunicorn", "auto", "gunicorn"),
    ],
)
def test_resolve(configured: str, interface: str, server: str) -> None:
    assert servers.resolve(configured, interface) == server


def test_mismatch_and_choices() -> None:
    assert servers.mismatch("gunicorn", "asgi")
    assert servers.mismatch("uvicorn", "wsgi")
    assert not servers.mismatch("gunicorn-uvicorn", "asgi")
    assert not servers.mismatch("auto", "wsgi")
    assert not servers.mismatch("gunicorn", "auto")
    assert servers.choices("asgi") == "`gunicorn-uvicorn` or `uvicorn`"
    assert servers.choices("wsgi") == "`gunicorn`"


def test_programs_and_extra_processes() -> None:
    assert [servers.program_of(s) for s in ("auto", *servers.SERVERS)] == [
        "gunicorn", "gunicorn", "gunicorn", "uvicorn",
    ]  # fmt: skip
    assert {s: servers.extra_processes(s) for s in ("auto", *servers.SERVERS)} == {
        "auto": 0, "gunicorn": 0, "gunicorn-uvicorn": 0, "uvicorn": 2,
    }  # fmt: skip


def test_the_config_offers_exactly_the_table() -> None:
    assert get_args(servers.ServerType) == ("auto", *servers.SERVERS)
    assert get_args(ServerConfig.model_fields["type"].annotation) == get_args(servers.ServerType)


def test_the_launchers_copy_matches_the_table() -> None:
    # The launcher runs alone in the image (stdlib only), so it keeps its own copy.
    assert tuple(servers.SERVERS) == launcher.SERVERS
    assert {n: s.interface for n, s in servers.SERVERS.items()} == launcher.INTERFACE_OF_SERVER
