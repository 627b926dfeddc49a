"""After a build: its SBOM (and provenance) written to the files asked for and attached
to what the build pushed or wrote as an OCI layout.

The default attaches the SBOM to every registry push and OCI layout (`--no-attest`
turns it off): the same image gives the same SBOM bytes, so a rebuild of the same inputs
leaves the registry and the layout as they were. The provenance carries the build's own
times and id, so it is attached (and written) only when `--provenance FILE` asks for it."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pydeploy import __version__, atomic
from pydeploy.attest import provenance, sbom
from pydeploy.attest.contents import read_contents
from pydeploy.attest.referrers import Artifact, Attached, Descriptor, attach, attach_to_layout
from pydeploy.attest.wanted import BuildRun, Wanted, attaches
from pydeploy.errors import PublishError
from pydeploy.oci.config import MEDIA_TYPE_MANIFEST
from pydeploy.plan.references import Reference, parse_reference, try_parse

if TYPE_CHECKING:
    from pydeploy.build import BuildResult
    from pydeploy.publish.outputs import Output

# Files whose digest names the dependency inputs, when the project has them.
LOCK_FILES = ("uv.lock", "poetry.lock", "pdm.lock", "pylock.toml", "requirements.txt")
_GIT_TIMEOUT = 10.0


def image_facts(result: BuildResult, pushed: Sequence[str]) -> sbom.ImageFacts:
    image, plan = result.image, result.plan
    reference = next(iter(pushed), None) or (result.tags[0] if result.tags else plan.image_name)
    named = try_parse(reference)
    name = named.familiar if named else plan.image_name
    config = json.loads(image.config)
    base = try_parse(plan.base_image)
    if base is not None and base.digest:
        base_digest, kind = base.digest, "manifest"
    elif result.base_image_id:
        base_digest, kind = result.base_image_id, "image-id"
    else:
        base_digest, kind = None, "unknown"
    return sbom.ImageFacts(
        name=name,
        reference=reference,
        digest=image.manifest_digest or image.image_id,
        image_id=image.image_id,
        created=sbom.created_time(config.get("created")),
        base_image=plan.base_image,
        base_digest=base_digest,
        base_digest_kind=kind,
        pydeploy_version=__version__,
    )


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def build_inputs(result: BuildResult, facts: sbom.ImageFacts) -> provenance.Inputs:
    root = result.plan.project.root
    locks: dict[str, str] = {}
    for name in (*LOCK_FILES, *result.plan.dependencies.requirements):
        path = root / name
        if path.is_file():
            locks[name] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    revision = _git(root, "rev-parse", "--verify", "HEAD")
    dirty = bool(revision) and bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return provenance.Inputs(
        base_image=facts.base_image,
        base_digest=facts.base_digest,
        lock_files=locks,
        git_revision=revision.strip() if revision else None,
        git_dirty=dirty,
    )


def _write(path: Path, data: bytes) -> None:
    try:
        atomic.write_bytes(path, data)
    except OSError as exc:
        raise PublishError(f"Cannot write {path}: {exc.strerror}.") from None


@dataclass(frozen=True)
class Outcome:
    attached: list[Attached] = field(default_factory=list)
    # Why a destination got nothing: the image is there already, so an attachment that
    # fails (a registry that refuses OCI artifacts) is a warning, not a failed build.
    problems: list[str] = field(default_factory=list)


def attest(
    result: BuildResult,
    outputs: Sequence[Output],
    wanted: Wanted,
    run: BuildRun,
    *,
    pushed: Sequence[str] | None = None,
) -> Outcome:
    """Write the documents asked for and attach them; what was attached where. `pushed`:
    the references whose repositories get the attachments (default: the image's own
    pushes; a platform image of an index is pushed by digest under the index's tags)."""
    attaching = attaches(outputs, wanted)
    if not attaching and not wanted.files:
        return Outcome()
    references = tuple(result.pushed if pushed is None else pushed)
    runtime = result.runtime_packages
    packages = runtime.packages if runtime is not None else result.plan.runtime_packages
    facts = image_facts(result, references)
    contents = read_contents(result.image.store, result.image.layers, packages, result.pins)
    documents: list[tuple[str, str, bytes]] = [
        ("sbom", sbom.MEDIA_TYPE, sbom.cyclonedx_json(facts, contents))
    ]
    if wanted.sbom_file is not None:
        _write(wanted.sbom_file, documents[0][2])
    if wanted.provenance_file is not None:
        finished = run.finished.astimezone(timezone.utc)
        about = provenance.Run(
            builder_id=f"pkg:pypi/pydeploy@{__version__}", invocation_id=run.invocation_id,
            started=run.started.astimezone(timezone.utc), finished=finished,
            path=result.path, dependencies_volume=result.dependencies_volume,
        )  # fmt: skip
        statement = provenance.statement(
            facts.name, facts.digest, plan=result.plan, tags=result.tags,
            inputs=build_inputs(result, facts), run=about,
        )  # fmt: skip
        data = (json.dumps(statement, indent=2) + "\n").encode()
        _write(wanted.provenance_file, data)
        documents.append(("provenance", provenance.MEDIA_TYPE, data))
    outcome = Outcome()
    if attaching and result.image.manifest is not None:
        subject = Descriptor(
            MEDIA_TYPE_MANIFEST, result.image.registry_manifest_digest(),
            len(result.image.manifest),
        )  # fmt: skip
        created = facts.created.isoformat().replace("+00:00", "Z")
        artifacts = [(kind, Artifact(media, data, subject, created))
                     for kind, media, data in documents]  # fmt: skip
        _to_outputs(references, outputs, artifacts, outcome)
    return outcome


def _to_outputs(
    pushed: Sequence[str],
    outputs: Sequence[Output],
    artifacts: list[tuple[str, Artifact]],
    outcome: Outcome,
) -> None:
    # Once per repository: its tags all name the same manifest.
    repositories: dict[tuple[str, str], Reference] = {}
    for reference in pushed:
        ref = parse_reference(reference)
        repositories.setdefault((ref.registry, ref.repository), ref)
    for ref in repositories.values():
        _collect(outcome, f"nothing attached to {ref}", functools.partial(attach, ref, artifacts))
    for output in outputs:
        if output.kind == "oci" and output.path is not None:
            send = functools.partial(attach_to_layout, output.path, artifacts)
            _collect(outcome, f"nothing attached to oci:{output.path}", send)


def _collect(outcome: Outcome, what: str, send: Callable[[], list[Attached]]) -> None:
    try:
        outcome.attached.extend(send())
    except PublishError as exc:
        outcome.problems.append(f"{what}: {exc.message}")
