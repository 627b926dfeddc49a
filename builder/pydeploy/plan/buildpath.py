"""Which way a build goes, and why: pure, so `plan` shows what `build` will do.

- engine: the dependencies are installed in a builder container and the app is checked
  in a container of the runtime image (the default whenever an engine answers);
- host: the dependencies are installed on this host for the image's platform
  (pydeploy.hostbuild): without an engine, for several platforms, for a platform the
  engine does not run natively, or for a base read from a file (`oci:`, `docker-archive:`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydeploy.errors import ConfigError, EngineError
from pydeploy.plan.references import BASE_FILE_KINDS


@dataclass(frozen=True)
class BuildPath:
    kind: Literal["engine", "host"]
    platforms: tuple[str, ...]  # what the host path builds (empty on the engine path)
    uses_engine: bool  # the engine path, or the host path's app check / `docker` output
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "platforms": list(self.platforms),
                "uses_engine": self.uses_engine, "reason": self.reason}  # fmt: skip


def choose(  # noqa: PLR0913 - every input of the decision, keyword-only
    *,
    platforms: tuple[str, ...],
    host: str,
    base: str,
    outputs: tuple[str, ...],
    no_engine: bool,
    engine_answers: bool,
    unreachable: EngineError | None = None,
) -> BuildPath:
    """The path for a build of `platforms` (empty: the base's) from `base` to `outputs`
    (their kinds), on a host of platform `host`; refuses what no path can do.
    `unreachable`: why no engine answered, when one was asked."""
    docker = "docker" in outputs
    from_file = next((k for k in BASE_FILE_KINDS if base.startswith(k)), None)
    if no_engine:
        if docker:
            raise ConfigError(
                "--no-engine, but the output `docker` loads the image into an engine.",
                hint="Push it (--push), or write it with --output oci:DIR or "
                "--output docker-archive:FILE.",
            )
        return BuildPath("host", platforms or (host,), False, "--no-engine")
    foreign = [p for p in platforms if p != host]
    if len(platforms) > 1 or foreign or from_file:
        if docker and not engine_answers:
            raise _no_engine_for_docker(unreachable)
        if len(platforms) > 1:
            why = f"{len(platforms)} platforms ({', '.join(platforms)})"
        elif foreign:
            why = f"the platform {foreign[0]} is not this host's ({host})"
        else:
            why = f"the base is read from a file ({base})"
        reason = f"{why}: each platform's wheels are installed on this host"
        if engine_answers:
            reason += "; the engine runs the app check where it can"
        return BuildPath("host", platforms or (host,), engine_answers, reason)
    if engine_answers:
        return BuildPath("engine", (), True, "an engine answers")
    if docker:
        raise _no_engine_for_docker(unreachable)
    return BuildPath(
        "host", platforms or (host,), False,
        "no engine answers: the dependencies are installed on this host",
    )  # fmt: skip


def _no_engine_for_docker(unreachable: EngineError | None) -> EngineError:
    """Why the engine did not answer (its own paragraph: where, and its fix), and that the
    output `docker` needs one; the outputs that do not."""
    why = str(unreachable) if unreachable else "No Docker or Podman engine answers."
    fix = (
        unreachable.hint
        if unreachable and unreachable.hint
        else "Start an engine (or point DOCKER_HOST at one)."
    )
    return EngineError(
        f"{why} The output `docker` (the default) loads the image into an engine.",
        hint=f"{fix} Or build without one: --push, --output oci:DIR or --output "
        "docker-archive:FILE (`pydeploy plan` shows the path).",
    )
