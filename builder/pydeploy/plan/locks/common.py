"""What every lock reader shares: the target environment a walk judges markers against,
conditions along dependency paths, and the one rule turning a locked package into a
requirement line.

A lock is read on the host, where the image's Python may not be known yet (`pydeploy
plan`, an ejected Dockerfile): then the target is every Python pydeploy may meet, a
marker is *decided* only when it says the same for all of them, and what stays undecided
is kept in the line for uv to judge in the builder. At build, the base image's probed
Python makes the target exact. Linux (CPython) is always known; the machine is not."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker, default_environment
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from pydeploy.errors import ConfigError

# Interpreters a base image may have when it has not been probed (builder_script runs on 3.8+).
ANY_PYTHON = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
_MACHINES = ("x86_64", "aarch64")
# Digest algorithms pip and uv accept in `--hash`.
HASH_ALGORITHMS = ("sha256", "sha384", "sha512")


@dataclass(frozen=True)
class Target:
    """The environments the image may run in: one Python (probed) or every candidate."""

    pythons: tuple[str, ...]  # full versions, e.g. "3.11.2"

    @classmethod
    def of(cls, python: str | None, allowed: Callable[[str], bool] | None = None) -> Target:
        """The target for a probed Python (`3.11.2`), or when None for any Python the
        project allows (`allowed`: its requires-python, which every build checks): each
        line at its first and a late release, so `python_full_version` bounds inside a
        line stay undecided."""
        if python:
            return cls((python if python.count(".") >= 2 else f"{python}.0",))
        candidates = [f"{minor}.{patch}" for minor in ANY_PYTHON for patch in (0, 99)]
        kept = [p for p in candidates if allowed is None or allowed(p)]
        return cls(tuple(kept or candidates))

    def environments(self) -> list[dict[str, str]]:
        found = []
        for python in self.pythons:
            for machine in _MACHINES:
                env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
                env.update(
                    implementation_name="cpython",
                    implementation_version=python,
                    os_name="posix",
                    platform_machine=machine,
                    platform_python_implementation="CPython",
                    platform_release="",
                    platform_system="Linux",
                    platform_version="",
                    python_full_version=python,
                    python_version=".".join(python.split(".")[:2]),
                    sys_platform="linux",
                )
                found.append(env)
        return found

    def decide(self, marker: str, where: str) -> bool | None:
        """True or False when `marker` says so in every target environment, else None."""
        try:
            parsed = Marker(marker)
        except InvalidMarker as exc:
            raise ConfigError(
                f"{where}: `{marker}` is not a valid environment marker ({exc}).",
                hint="Regenerate the lock with the tool that wrote it.",
            ) from None
        results = {parsed.evaluate({**env, "extra": ""}) for env in self.environments()}
        return results.pop() if len(results) == 1 else None

    def allows_python(self, specifiers: Iterable[SpecifierSet]) -> bool | None:
        """Whether every (True), no (False) or some (None) target Python satisfies one of
        `specifiers` (Poetry's `||` alternatives)."""
        alternatives = list(specifiers)
        results = {
            any(s.contains(Version(p), prereleases=True) for s in alternatives)
            for p in self.pythons
        }
        return results.pop() if len(results) == 1 else None


def python_marker(specifiers: Iterable[SpecifierSet]) -> str:
    """A marker equivalent to Python specifier alternatives (`python = "<3.11"`)."""
    parts = []
    for spec in specifiers:
        clauses = [f'python_full_version {s.operator} "{s.version}"' for s in spec]
        parts.append(" and ".join(clauses) if clauses else 'python_version >= "0"')
    return " or ".join(f"({p})" for p in parts) if len(parts) > 1 else parts[0]


@dataclass
class Conditions:
    """When a package is needed: any one of its conjunctions of markers (one per way the
    walk reached it), an empty conjunction meaning always. A conjunction holding another
    adds nothing, so a walk revisiting a package under a stricter condition stops."""

    alternatives: list[frozenset[str]] = field(default_factory=list)

    def add(self, condition: frozenset[str]) -> bool:
        """Record one more way to be needed; False when it adds nothing."""
        if any(known <= condition for known in self.alternatives):
            return False
        self.alternatives = [k for k in self.alternatives if not condition <= k]
        self.alternatives.append(condition)
        return True

    def marker(self) -> str | None:
        """The marker of the line (None: always needed)."""
        if not self.alternatives or frozenset() in self.alternatives:
            return None
        if len(self.alternatives) == 1 and len(self.alternatives[0]) == 1:
            return next(iter(self.alternatives[0]))
        ands = [" and ".join(f"({m})" for m in sorted(c)) for c in self.alternatives]
        return " or ".join(f"({a})" for a in sorted(ands)) if len(ands) > 1 else ands[0]


def narrow(
    condition: frozenset[str], markers: Iterable[str], target: Target, where: str
) -> frozenset[str] | None:
    """`condition` and `markers` (each decided if it can be); None when one is false."""
    kept = set(condition)
    for marker in markers:
        if not marker.strip():
            continue
        decided = target.decide(marker, where)
        if decided is False:
            return None
        if decided is None:
            kept.add(marker.strip())
    return frozenset(kept)


@dataclass(frozen=True)
class Locked:
    """One package a lock installs: from an index (name, version, hashes), a direct URL
    (archive or VCS, `url` already in requirement form), or a local path (relative to
    the lock's directory)."""

    name: str
    version: str | None = None
    hashes: tuple[str, ...] = ()  # `algorithm:hex`
    url: str | None = None
    path: str | None = None
    marker: str | None = None

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)


def requirement_line(package: Locked, lock: str) -> str:
    """The line `uv pip install --no-deps -r` gets. Index packages carry every hash the lock
    has (uv verifies them); one without any is refused: hashes are enforced."""
    marker = f" ; {package.marker}" if package.marker else ""
    hashes = "".join(f" --hash={h}" for h in package.hashes)
    if package.path is not None:
        return local_ref(package.path) + marker
    if package.url is not None:
        return f"{package.name} @ {package.url}{marker}{hashes}"
    if not package.version:
        raise ConfigError(f"{lock}: package `{package.name}` has no version, URL or path.")
    if not package.hashes:
        raise ConfigError(
            f"{lock}: package `{package.name}` {package.version} has no hashes, and pydeploy "
            "installs locked packages with their hashes enforced.",
            hint="Regenerate the lock with hashes (the lock tools write them by default), or "
            "choose another `tool.pydeploy.dependencies.source`.",
        )
    return f"{package.name}=={package.version}{marker}{hashes}"


def hashes_of(values: Iterable[str], lock: str, name: str) -> tuple[str, ...]:
    """`algorithm:hex` strings (pip's form) of the accepted algorithms, sorted."""
    found = set()
    for value in values:
        if value == "":
            continue
        if not isinstance(value, str) or ":" not in value:
            raise ConfigError(
                f"{lock}: package `{name}` has a hash {value!r} that is not `algorithm:hex`.",
                hint="Regenerate the lock with the tool that wrote it.",
            )
        algorithm, _, digest = value.partition(":")
        if algorithm.lower() in HASH_ALGORITHMS and digest:
            found.add(f"{algorithm.lower()}:{digest.lower()}")
    return tuple(sorted(found))


def local_ref(path: str) -> str:
    """A path as a requirements line names it (uv reads it relative to the file)."""
    return path if path.startswith(("/", ".")) else f"./{path}"


def vcs_url(kind: str, url: str, commit: str | None, subdirectory: str | None) -> str:
    """`git+URL@COMMIT#subdirectory=SUB`, the direct reference of a locked VCS package."""
    ref = url if url.startswith(f"{kind}+") else f"{kind}+{url}"
    ref += f"@{commit}" if commit else ""
    return ref + (f"#subdirectory={subdirectory}" if subdirectory else "")


def bad_lock(path: Path | str, what: str, tool: str) -> ConfigError:
    return ConfigError(
        f"{path}: {what}.",
        hint=f"Regenerate it with `{tool}` (it is not a lock pydeploy can read).",
    )


@dataclass(frozen=True)
class Selection:
    """What a lock installs for the requested extras and groups."""

    packages: tuple[Locked, ...]

    def lines(self, lock: str) -> list[str]:
        """One line per package, sorted; entries of one package (PDM locks a package
        again for each extra asked of it) merge."""
        merged: dict[tuple[str, str | None, str | None, str | None], Locked] = {}
        for package in self.packages:
            ident = (package.key, package.version, package.url, package.path)
            known = merged.get(ident)
            if known is None:
                merged[ident] = package
                continue
            markers = None
            if known.marker and package.marker and known.marker != package.marker:
                markers = f"({known.marker}) or ({package.marker})"
            elif known.marker == package.marker:
                markers = known.marker
            hashes = tuple(sorted({*known.hashes, *package.hashes}))
            merged[ident] = Locked(
                known.name, known.version, hashes, known.url, known.path, markers
            )
        return [requirement_line(p, lock) for p in sorted(merged.values(), key=_order)]

    @property
    def paths(self) -> list[str]:
        """Local paths the selection installs, relative to the lock's directory."""
        return [p.path for p in self.packages if p.path is not None]


def _order(package: Locked) -> tuple[str, str]:
    return package.key, package.version or package.url or package.path or ""


Pins = dict[str, frozenset[str]]


def pins_of(entries: Iterable[tuple[object, object]]) -> Pins:
    """name -> the versions a lock pins for it, from (name, version) pairs (every package
    of the lock, selected or not: two locks that disagree are told apart by these)."""
    found: dict[str, set[str]] = {}
    for name, version in entries:
        if isinstance(name, str) and isinstance(version, str) and version:
            found.setdefault(canonicalize_name(name), set()).add(version)
    return {name: frozenset(versions) for name, versions in found.items()}
