"""The plan's package indexes: CA bundle discovery from the environment it is given,
uv's index numbering, and a JSON form that names credential variables, never values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pydeploy.config.models import IndexConfig
from pydeploy.errors import ConfigError
from pydeploy.plan import index
from pydeploy.plan.index import IndexPlan


def test_ca_bundle_discovery_order(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("cfg", "ssl", "pip", "req")}
    for path in files.values():
        path.write_text("pem", encoding="utf-8")
    env = {
        "SSL_CERT_FILE": str(files["ssl"]),
        "PIP_CERT": str(files["pip"]),
        "REQUESTS_CA_BUNDLE": str(files["req"]),
    }
    find = index.find_ca_bundle
    assert find("cfg.pem", tmp_path, env) == (files["cfg"], "tool.pydeploy.index.ca-bundle")
    assert find(None, tmp_path, env) == (files["ssl"], "SSL_CERT_FILE")
    gone = {**env, "SSL_CERT_FILE": str(tmp_path / "gone.pem")}
    assert find(None, tmp_path, gone) == (files["pip"], "PIP_CERT")
    only = {"REQUESTS_CA_BUNDLE": str(files["req"])}
    assert find(None, tmp_path, only) == (files["req"], "REQUESTS_CA_BUNDLE")
    assert find(None, tmp_path, {}) is None


def test_configured_ca_bundle_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.index\.ca-bundle"):
        index.find_ca_bundle("missing.pem", tmp_path, {})


def test_resolve_index_reads_only_the_environment_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "host.pem"
    bundle.write_text("pem", encoding="utf-8")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    config = IndexConfig(url="https://pkgs.example/simple", password_env="TOKEN")  # noqa: S106
    assert index.resolve_index(config, tmp_path, {}).ca_bundle is None
    given = index.resolve_index(config, tmp_path, {"PIP_CERT": str(bundle)})
    assert (given.ca_bundle, given.ca_bundle_origin) == (bundle, "PIP_CERT")
    assert given.url == "https://pkgs.example/simple"
    assert given.password_env == "TOKEN"  # noqa: S105 - a variable's NAME


def test_indexes_are_numbered_as_uv_names_them() -> None:
    both = IndexPlan(url="https://a.example/simple", extra_urls=("https://b", "https://c"))
    assert both.numbered() == ((0, "https://a.example/simple"), (1, "https://b"), (2, "https://c"))
    # Without a primary index, PyPI stays the default and the extra ones still start at 1.
    assert IndexPlan(extra_urls=("https://b",)).numbered() == ((1, "https://b"),)
    assert IndexPlan().numbered() == ()


def test_index_json_names_credential_variables_only(tmp_path: Path) -> None:
    plan = IndexPlan(
        url="https://pkgs.example/simple",
        ca_bundle=tmp_path / "ca.pem",
        ca_bundle_origin="SSL_CERT_FILE",
        username_env="U",
        password_env="P",  # noqa: S106 - a variable's NAME
    )
    assert json.loads(json.dumps(plan.to_json())) == {
        "url": "https://pkgs.example/simple",
        "extra_urls": [],
        "ca_bundle": {"path": str(tmp_path / "ca.pem"), "origin": "SSL_CERT_FILE"},
        "credentials": {"username_env": "U", "password_env": "P"},
    }
    assert IndexPlan().to_json()["ca_bundle"] is None
