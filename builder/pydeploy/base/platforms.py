"""Target platforms (`os/architecture[/variant]`), as OCI image indexes name them."""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass

from pydeploy.errors import ConfigError

# architecture -> `uname -m` (and the manylinux/musllinux tag's arch).
_MACHINES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "386": "i686",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
# The names Docker also accepts for an architecture (`--platform linux/x86_64`).
_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}
_ARM_VARIANTS = {"v6": "armv6l", "v7": "armv7l"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/amd64`, `linux/arm64`, `linux/arm64/v8`, `linux/arm/v7`. arm64's only
        variant, v8, is left out (as Docker shows it), so both spellings are equal."""
        parsed = _parse(text)
        if isinstance(parsed, str):
            raise ConfigError(f"{text!r} is not a platform pydeploy can build for: {parsed}.",
                              hint=HINT)  # fmt: skip
        return parsed

    @staticmethod
    def problem(text: str) -> str | None:
        """Why `text` is not a platform `parse` takes, or None (the config's validator)."""
        parsed = _parse(text)
        return parsed if isinstance(parsed, str) else None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def machine(self) -> str:
        """What `uname -m` says on this platform (x86_64, aarch64)."""
        if self.architecture == "arm":
            return _ARM_VARIANTS[self.variant]
        return _MACHINES[self.architecture]

    def matches(self, os_name: str, architecture: str, variant: str = "") -> bool:
        """Whether an index entry's or config's platform fields name this platform."""
        if os_name != self.os or architecture != self.architecture:
            return False
        if self.architecture == "arm64":
            return variant in {"", "v8"}
        return variant == self.variant


HINT = (
    "Use linux/amd64, linux/arm64 (or linux/arm64/v8), linux/arm/v7, linux/386, "
    "linux/ppc64le, linux/s390x or linux/riscv64."
)


def _parse(text: str) -> Platform | str:  # noqa: PLR0911 - a return per rule
    """The platform, or why `text` is none (the one statement of the grammar)."""
    parts = text.strip().lower().split("/")
    if len(parts) not in {2, 3} or not all(parts):
        return "it is not os/architecture[/variant]"
    os_name, arch = parts[0], _ALIASES.get(parts[1], parts[1])
    variant = parts[2] if len(parts) == 3 else ""
    if os_name != "linux":
        return "pydeploy builds Linux images only"
    if arch == "arm64" and variant in {"", "v8"}:
        return Platform(os_name, arch, "")
    if arch == "arm":
        if variant not in _ARM_VARIANTS:
            return "32-bit arm needs a variant, v6 or v7"
        return Platform(os_name, arch, variant)
    if arch not in _MACHINES:
        return f"the architecture {arch!r} is not one pydeploy knows"
    if variant:
        return f"{arch} has no variant {variant!r}"
    return Platform(os_name, arch, "")


def architecture_of(machine: str) -> str:
    """The OCI architecture of a `uname -m` (x86_64 -> amd64, aarch64 -> arm64); other
    names as they are."""
    machine = machine.lower()
    by_machine = {m: a for a, m in _MACHINES.items()}
    if machine in {"armv7l", "armv6l"}:
        return "arm"
    return by_machine.get(machine, _ALIASES.get(machine, machine))


def host_platform() -> Platform:
    """The platform of this host's CPU (Linux assumed: images are Linux)."""
    machine = _host.machine().lower()
    if machine in {"armv7l", "armv6l"}:
        return Platform("linux", "arm", machine[3:5])
    return Platform.parse(f"linux/{architecture_of(machine)}")
