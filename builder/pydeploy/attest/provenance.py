"""The provenance of an image (pure): an in-toto Statement v1 whose predicate is SLSA
Provenance v1. It names the inputs a user chose (externalParameters: the project, the
[tool.pydeploy] settings that shape the image, the tags), what pydeploy chose for them
(internalParameters), what the build consumed by digest (resolvedDependencies: the base
image, the lock file, the git revision) and who built it when (runDetails).

Never a secret: the plan's environment values (`env`, and the app check's `check-env`
placeholders) and the labels' values are left out; only the names of `env` keys go in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydeploy.cachekeys import RECIPE_VERSION, UV_VERSION
from pydeploy.plan.planner import BuildPlan

MEDIA_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://example.invalid/pydeploy/buildtypes/image/v1"


@dataclass(frozen=True)
class Inputs:
    """What the build consumed, by digest, as the caller found it."""

    base_image: str  # the reference the build used
    base_digest: str | None  # its manifest digest when pinned, else its image ID
    lock_files: Mapping[str, str]  # file name in the project -> sha256 digest
    git_revision: str | None  # the project's HEAD commit, when it is a git work tree
    git_dirty: bool


@dataclass(frozen=True)
class Run:
    builder_id: str  # pydeploy and its version
    invocation_id: str  # the build id
    started: datetime
    finished: datetime
    path: str  # "engine" or "host"
    dependencies_volume: str


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def external_parameters(plan: BuildPlan, tags: Sequence[str]) -> dict[str, Any]:
    """The settings that shape the image, as the user set them (never env values)."""
    return {
        "project": plan.project.root.name,
        "tags": list(tags),
        "settings": {
            "app": plan.app,
            "server": plan.server,
            "python": plan.python,
            "base-image": plan.base_image,
            "platforms": list(plan.platforms),
            "runtime-packages": list(plan.runtime_packages),
            "build-packages": list(plan.build_packages),
            "dependency-source": plan.dependency_source,
            "extras": list(plan.dependencies.extras),
            "groups": list(plan.dependencies.groups),
            "install-project": plan.install_project,
            "user-id": plan.user_id,
            "port": plan.port,
            "env-names": sorted({name for name, _ in plan.env}),
        },
    }


def _digest_map(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    return {algorithm: value}


def resolved_dependencies(inputs: Inputs) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"uri": f"oci:{inputs.base_image}", "name": "base-image"}
    if inputs.base_digest:
        base["digest"] = _digest_map(inputs.base_digest)
    found: list[dict[str, Any]] = [
        base,
        *({"uri": f"file:{name}", "name": name, "digest": _digest_map(digest)}
          for name, digest in sorted(inputs.lock_files.items())),
    ]  # fmt: skip
    if inputs.git_revision:
        found.append(
            {"uri": "git+file:.", "name": "source", "digest": {"gitCommit": inputs.git_revision},
             "annotations": {"dirty": inputs.git_dirty}}
        )  # fmt: skip
    return found


def statement(  # noqa: PLR0913 - the subject, and what the predicate says of it
    subject_name: str,
    subject_digest: str,
    *,
    plan: BuildPlan,
    tags: Sequence[str],
    inputs: Inputs,
    run: Run,
) -> dict[str, Any]:
    """The in-toto Statement for the image `subject_name@subject_digest`."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": _digest_map(subject_digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external_parameters(plan, tags),
                "internalParameters": {
                    "path": run.path,
                    "recipe": RECIPE_VERSION,
                    "uv": UV_VERSION,
                    "interface": plan.interface,
                    "dependencies-volume": run.dependencies_volume or None,
                },
                "resolvedDependencies": resolved_dependencies(inputs),
            },
            "runDetails": {
                "builder": {"id": run.builder_id},
                "metadata": {
                    "invocationId": run.invocation_id,
                    "startedOn": _rfc3339(run.started),
                    "finishedOn": _rfc3339(run.finished),
                },
            },
        },
    }
