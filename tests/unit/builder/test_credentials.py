"""Index settings for builder containers: credentials read from the variables the plan
names, the uv/pip index environment, and masking every form of a secret. (The CA bundle
is resolved by the plan: tests/unit/plan/test_index.py.)"""

from __future__ import annotations

import base64

import pytest

from pydeploy.builder import credentials
from pydeploy.errors import ConfigError
from pydeploy.plan.index import IndexPlan

# --- credentials and masking --------------------------------------------------------------


def test_credentials_come_from_the_named_variables() -> None:
    index = IndexPlan(
        url="https://pkgs.example/simple",
        username_env="U",
        password_env="P",  # noqa: S106 - the NAME of a variable, not a password
    )
    creds = credentials.read_credentials(index, {"U": "robot", "P": "tok/en:with@chars"})
    assert creds == credentials.Credentials("robot", "tok/en:with@chars")
    with pytest.raises(ConfigError, match=r"tool\.pydeploy\.index\.password-env.*\bP\b"):
        credentials.read_credentials(index, {"U": "robot"})


def test_index_environment_keeps_every_secret_apart() -> None:
    index = IndexPlan(
        url="https://pkgs.example/simple",
        extra_urls=("https://extra.example/simple",),
        username_env="U",
        password_env="P",  # noqa: S106 - the NAME of a variable, not a password
    )
    creds = credentials.Credentials("robot", "s3cr3t/token")
    env = credentials.index_environment(index, creds)
    assert env.public == {
        "UV_DEFAULT_INDEX": "pydeploy-0=https://pkgs.example/simple",
        "UV_INDEX": "pydeploy-1=https://extra.example/simple",
    }
    secret = env.secret
    assert secret["UV_INDEX_PYDEPLOY_0_PASSWORD"] == "s3cr3t/token"  # noqa: S105
    assert secret["UV_INDEX_PYDEPLOY_1_USERNAME"] == "robot"
    assert secret["PIP_INDEX_URL"] == "https://robot:s3cr3t%2Ftoken@pkgs.example/simple"
    assert secret["PIP_EXTRA_INDEX_URL"] == "https://robot:s3cr3t%2Ftoken@extra.example/simple"
    assert not any("s3cr3t" in name for name in secret)
    # Without credentials the pip URLs are plain settings.
    plain = credentials.index_environment(index, credentials.Credentials())
    assert plain.secret == {}
    assert plain.public["PIP_INDEX_URL"] == "https://pkgs.example/simple"
    # No index configured: PyPI, and credentials go nowhere.
    assert credentials.index_environment(IndexPlan(), creds) == credentials.IndexEnvironment({}, {})


def test_masker_hides_every_form_of_a_secret() -> None:
    creds = credentials.Credentials("robot", "s3cr3t/token")
    mask = credentials.Masker(creds.secrets())
    header = base64.b64encode(b"robot:s3cr3t/token").decode()
    text = (
        "GET https://robot:s3cr3t%2Ftoken@pkgs.example/simple "
        f"Authorization: Basic {header} password s3cr3t/token"
    )
    masked = mask(text)
    assert "s3cr3t" not in masked
    assert header not in masked
    assert masked.count("****") == 4
    # Too-short values would mangle ordinary output; they are left alone.
    assert credentials.Masker(["ab"])("about") == "about"
