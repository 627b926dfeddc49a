"""Image references: the one parser for every name, tag and registry prefix pydeploy
accepts (`tool.pydeploy.name`/`tags`, `--tag`, `--registry`, `--image`, base images).

The grammar is the OCI distribution spec's (the one Docker's `reference` package
implements): `[domain[:port]/]path[:tag][@digest]`, lowercase path components joined by
`.`, `_`, `__` or dashes, a tag of at most 128 characters and a name of at most 255.
Checking it when the configuration is read, rather than at `docker load` or push time,
turns a bad name into exit 2 with the key that holds it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pydeploy.errors import ConfigError

DOCKER_HUB = "registry-1.docker.io"
HUB_NAMES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})
NAME_MAX = 255  # the whole name, domain included
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
    r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Characters no path component holds, then runs of separators (`..`, `._`) it does not allow.
_NOT_NAME = re.compile(r"[^a-z0-9._-]+")
_SEPARATORS = re.compile(r"[._-]{2,}")


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`; Docker Hub names are expanded."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def target(self) -> str:
        """What goes after `/manifests/` (and a pull's tag): the digest when pinned, else
        the tag."""
        return self.digest or self.tag or "latest"

    @property
    def familiar(self) -> str:
        """The name without tag or digest as Docker shows it (RepoTags, RepoDigests, pull):
        Docker Hub's registry left out, and its `library/` for one-component names."""
        if self.registry != DOCKER_HUB:
            return f"{self.registry}/{self.repository}"
        short = self.repository.removeprefix("library/")
        return short if "/" not in short else self.repository

    @property
    def hostname(self) -> str:
        """The registry's host without port or brackets: `[::1]:5000` -> `::1`."""
        return registry_host(self.registry)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def registry_host(registry: str) -> str:
    """`[::1]:5000` -> `::1`, `host:5000` -> `host` (a bare IPv6 address stays whole)."""
    if registry.startswith("["):
        return registry[1 : registry.find("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def show(text: str) -> str:
    """A value quoted for a message, cut short (a 2 MB name must not flood the terminal)."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


GRAMMAR = (
    "[registry/]repository[:tag], e.g. 127.0.0.1:5000/team/app:1.0: a lowercase repository "
    "of letters and digits with single `.`, `_` or `-` between them, at most "
    f"{NAME_MAX} characters; a tag of 1-128 letters, digits, `_`, `.` and `-`"
)


def _parse(text: str) -> Reference | str:
    """The reference, or why `text` is none (Docker's rules: the first component is a
    registry when it has a '.' or ':' or is 'localhost'; else Docker Hub, `library/` added)."""
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        return "the digest is not sha256:<64 hex digits>"
    if len(name) > NAME_MAX + 129:  # before any regex: the longest name and tag
        return f"it is {len(name)} characters long"
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, remainder = first, rest
        if not _DOMAIN.fullmatch(registry):
            return f"the registry {show(registry)} is not a host[:port]"
    else:
        registry, remainder = "docker.io", name
    tag: str | None = None
    last = remainder.rsplit("/", 1)[-1]
    if ":" in last:
        remainder, _, tag = remainder.rpartition(":")
        if not _TAG.fullmatch(tag):
            return f"the tag {show(tag)} is not 1-128 letters, digits, `_`, `.` and `-`"
    why = _repository_problem(name, remainder, tag)
    if why:
        return why
    if registry in HUB_NAMES:
        registry = DOCKER_HUB
        if "/" not in remainder:
            remainder = f"library/{remainder}"
    if tag is None and not digest:
        tag = "latest"
    return Reference(registry, remainder, tag, digest or None)


def _repository_problem(name: str, repository: str, tag: str | None) -> str | None:
    """Why the repository of `name` (the reference without its digest) is none."""
    if not repository or not all(_COMPONENT.fullmatch(c) for c in repository.split("/")):
        return (
            f"the repository {show(repository)} is not lowercase letters and digits with "
            "single separators"
        )
    length = len(name) - (len(tag) + 1 if tag is not None else 0)
    if length > NAME_MAX:
        return f"the name is {length} characters long (at most {NAME_MAX})"
    return None


def _refuse(text: str, why: str, where: str | None) -> ConfigError:
    prefix = f"{where}: " if where else ""
    return ConfigError(
        f"{prefix}{show(text)} is not a valid image reference: {why}.", hint=f"Use {GRAMMAR}."
    )


def parse_reference(text: str, where: str | None = None) -> Reference:
    """Parse an image reference; `where` (the key or option it came from) starts the
    error message."""
    parsed = _parse(text)
    if isinstance(parsed, str):
        raise _refuse(text, parsed, where)
    return parsed


def try_parse(text: str) -> Reference | None:
    """The reference, or None when `text` is none (names the engine reports, say)."""
    parsed = _parse(text)
    return None if isinstance(parsed, str) else parsed


def reference_problem(text: str) -> str | None:
    """Why `text` is not an image reference (a base image, say), or None."""
    parsed = _parse(text)
    return parsed if isinstance(parsed, str) else None


BASE_FILE_KINDS = ("oci:", "docker-archive:")  # a base read from a file, not a registry


def base_problem(text: str) -> str | None:
    """Why `text` is not a base image: a reference, `oci:DIR[:TAG]` or
    `docker-archive:FILE`."""
    kind = next((k for k in BASE_FILE_KINDS if text.startswith(k)), None)
    if kind is not None:
        return None if text[len(kind) :] else f"`{kind}` needs a path after it"
    return reference_problem(text)


_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


def platform_problem(text: str) -> str | None:
    """Why `text` is not an OCI platform (`os/architecture[/variant]`), or None."""
    if not _PLATFORM.match(text):
        return "use os/architecture[/variant], e.g. linux/amd64 or linux/arm64"
    return None


def name_problem(text: str) -> str | None:
    """Why `text` is not a repository name without tag or digest, or None."""
    if ":" in text.rsplit("/", 1)[-1] or "@" in text:
        return "a name has no tag or digest (tags go in `tags` or --tag)"
    parsed = _parse(text)
    return parsed if isinstance(parsed, str) else None


def repository_problem(text: str) -> str | None:
    """Why `text` is not a repository (`[registry/]name`, no tag or digest: the registry
    cache's), or None."""
    if ":" in text.rsplit("/", 1)[-1] or "@" in text:
        return "a repository has no tag or digest (pydeploy names its records' tags)"
    parsed = _parse(text)
    return parsed if isinstance(parsed, str) else None


def tag_problem(text: str) -> str | None:
    """Why `text` is neither a bare tag (`1.2.3`) nor a full `name:tag`, or None."""
    if ":" not in text and "/" not in text:
        return None if _TAG.fullmatch(text) else "a tag is 1-128 letters, digits, `_`, `.` and `-`"
    if "@" in text:
        return "an image is tagged by `name:tag`, not pinned by a digest"
    if ":" not in text.rsplit("/", 1)[-1]:
        return "a full reference needs its `:tag`"
    parsed = _parse(text)
    return parsed if isinstance(parsed, str) else None


def check(problem: str | None, text: str, where: str) -> str:
    """`text`, or a ConfigError naming `where` when `problem` says what is wrong with it."""
    if problem is not None:
        raise _refuse(text, problem, where)
    return text


def name_from_project(project_name: str) -> str:
    """The image name for a [project] name: accents dropped (`café` -> `cafe`), lowercase,
    anything a path component may not hold replaced by `-`. "" when nothing is left."""
    ascii_name = (
        unicodedata.normalize("NFKD", project_name).encode("ascii", "ignore").decode().lower()
    )
    name = _SEPARATORS.sub("-", _NOT_NAME.sub("-", ascii_name))
    return name[:NAME_MAX].strip("-._")
