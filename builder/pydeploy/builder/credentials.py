"""Package index settings for builder containers: credentials read from the host
environment by the names the plan holds (values never live in config or the plan), the
masking of every form of them in output, and the uv/pip environment for the plan's
indexes (plan/index.py resolves them, with the CA bundle builders trust).

Pure: nothing here touches the engine. Variables that carry a secret are kept apart
from the rest: they never enter a container's configuration (the builder hands them to
its tools through the container's attached stdin; see engine.py).
Not named `secrets` so it never shadows the stdlib module in the launcher's directory.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydeploy.errors import ConfigError
from pydeploy.plan.index import IndexPlan

# --- secrets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Index credentials read from the host environment (values, never in config)."""

    username: str | None = None
    password: str | None = None

    def secrets(self) -> list[str]:
        values = [v for v in (self.username, self.password) if v]
        if self.password:
            # What an HTTP client may print: the basic-auth header.
            pair = f"{self.username or ''}:{self.password}".encode()
            values.append(base64.b64encode(pair).decode())
        return values


def read_credentials(index: IndexPlan, environ: Mapping[str, str]) -> Credentials:
    """The values of the variables named by `username-env` / `password-env`, read at
    build time (the plan holds only the names)."""
    values: dict[str, str | None] = {}
    for key, name in (("username", index.username_env), ("password", index.password_env)):
        if name is None:
            values[key] = None
            continue
        value = environ.get(name)
        if not value:
            raise ConfigError(
                f"`tool.pydeploy.index.{key}-env` names the environment variable {name}, "
                "but it is not set (or empty).",
                hint=f"Export {name} before running pydeploy (in CI: from a secret).",
            )
        values[key] = value
    return Credentials(values["username"], values["password"])


class Masker:
    """Replaces every secret (and its URL-quoted form) with `****` in a text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            # Very short values would mask ordinary words; credentials are not that short.
            if len(secret) >= 4:
                variants |= {
                    secret,
                    urllib.parse.quote(secret, safe=""),
                    urllib.parse.quote(secret),
                }
        self._variants = sorted(variants, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for variant in self._variants:
            text = text.replace(variant, "****")
        return text


# --- indexes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEnvironment:
    public: dict[str, str]  # may be in a container's configuration
    secret: dict[str, str]  # carries a credential: only ever on a container's stdin


def index_environment(index: IndexPlan, credentials: Credentials) -> IndexEnvironment:
    """uv and pip settings for the plan's indexes. Credentials go to uv as per-index
    variables and to pip inside the index URL, all of them in `secret`."""
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    for number, url in index.numbered():
        name = f"pydeploy-{number}"
        if number == 0:
            public["UV_DEFAULT_INDEX"] = f"{name}={url}"
        else:
            public["UV_INDEX"] = (public.get("UV_INDEX", "") + f" {name}={url}").strip()
        if credentials.username:
            secret[uv_credential_variable(number, "USERNAME")] = credentials.username
        if credentials.password:
            secret[uv_credential_variable(number, "PASSWORD")] = credentials.password
    pip = public if not (credentials.username or credentials.password) else secret
    if index.url:
        pip["PIP_INDEX_URL"] = _with_credentials(index.url, credentials)
    if index.extra_urls:
        pip["PIP_EXTRA_INDEX_URL"] = " ".join(
            _with_credentials(url, credentials) for url in index.extra_urls
        )
    return IndexEnvironment(public, secret)


def uv_credential_variable(number: int, part: Literal["USERNAME", "PASSWORD"]) -> str:
    """The variable uv reads index `pydeploy-<number>`'s username or password from."""
    return f"UV_INDEX_PYDEPLOY_{number}_{part}"


def _with_credentials(url: str, credentials: Credentials) -> str:
    if not (credentials.username or credentials.password):
        return url
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.quote(credentials.username or "", safe="")
    password = urllib.parse.quote(credentials.password or "", safe="")
    auth = f"{user}:{password}" if password else user
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def index_settings(index: IndexPlan) -> dict[str, Any]:
    """What of the index settings decides the dependency set: URLs, never secrets."""
    return {"url": index.url, "extra_urls": list(index.extra_urls)}
