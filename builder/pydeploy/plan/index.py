"""The package indexes of a build, resolved once for the plan: their URLs (never with
credentials), the CA bundle builder containers trust, and the NAMES of the environment
variables that hold the index credentials. The values of those variables are secrets:
the build reads them (builder/credentials.py), the plan never holds them.

Pure: the host environment is an argument, and only the CA variables are read from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydeploy.config.models import IndexConfig
from pydeploy.errors import ConfigError

# Where tools look for a CA bundle; the first one naming a file is the host's bundle.
CA_ENV_VARS = ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
CA_CONFIG_KEY = "tool.pydeploy.index.ca-bundle"


@dataclass(frozen=True)
class IndexPlan:
    """Where builder containers find packages. Secrets never go here."""

    url: str | None = None  # the primary index; None: the tools' default (PyPI)
    extra_urls: tuple[str, ...] = ()
    ca_bundle: Path | None = None  # an existing file on the host
    ca_bundle_origin: str | None = None  # CA_CONFIG_KEY or the variable that named it
    username_env: str | None = None  # NAME of the variable holding the username
    password_env: str | None = None  # NAME of the variable holding the password/token

    def numbered(self) -> tuple[tuple[int, str], ...]:
        """(number, URL) of every configured index: 0 for the primary one, extra ones
        from 1. uv names each index `pydeploy-<number>` and reads its credentials from
        UV_INDEX_PYDEPLOY_<number>_USERNAME/_PASSWORD."""
        primary = ((0, self.url),) if self.url else ()
        return primary + tuple(enumerate(self.extra_urls, start=1))

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "extra_urls": list(self.extra_urls),
            "ca_bundle": (
                {"path": str(self.ca_bundle), "origin": self.ca_bundle_origin}
                if self.ca_bundle
                else None
            ),
            "credentials": {"username_env": self.username_env, "password_env": self.password_env},
        }


def resolve_index(config: IndexConfig, project_root: Path, environ: Mapping[str, str]) -> IndexPlan:
    """`[tool.pydeploy.index]` with its CA bundle found (see find_ca_bundle)."""
    found = find_ca_bundle(config.ca_bundle, project_root, environ)
    return IndexPlan(
        url=config.url,
        extra_urls=tuple(config.extra_urls),
        ca_bundle=found[0] if found else None,
        ca_bundle_origin=found[1] if found else None,
        username_env=config.username_env,
        password_env=config.password_env,
    )


def find_ca_bundle(
    configured: str | None, project_root: Path, environ: Mapping[str, str]
) -> tuple[Path, str] | None:
    """The CA bundle builder containers trust and where it came from: `index.ca-bundle`
    (which must exist), else the first of CA_ENV_VARS that names an existing file."""
    if configured:
        path = (project_root / Path(configured).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(
                f"`{CA_CONFIG_KEY}` = {configured!r} is not a file ({path}).",
                hint="Point it at a PEM bundle, or remove it to use SSL_CERT_FILE/PIP_CERT.",
            )
        return path, CA_CONFIG_KEY
    for name in CA_ENV_VARS:
        value = environ.get(name)
        if value and Path(value).is_file():
            return Path(value).resolve(), name
    return None
