"""`pydeploy build`'s no-change fast path, the command's side.

Only for `--output docker` builds of one project: a registry, an OCI layout or an archive
can change where pydeploy cannot see it, a local engine answers for its own images. The
command's arguments, working directory and environment name a record (pydeploy.fastpath);
when the host reads the same as it recorded and the engine still holds the recorded image
under every tag (and the base under its name), the recorded result is the answer, without
importing the build. Any doubt, and the command builds normally (and records again).

`pydeploy check` keeps the same kind of record of a check that passed: the host reading
the same (its config, the files planning read, git) is the same answer, so the recorded
text is printed without importing the config models. A failed check records nothing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydeploy import fastpath
from pydeploy.cachedir import cache_root

if TYPE_CHECKING:
    from pydeploy.build import BuildResult
    from pydeploy.plan.planner import BuildPlan

# Trees whose reads are not inputs of a build: the host cache (the build's own state)
# and the interpreter's files (its version is in the key). Besides the pseudo-filesystems.
_NOT_INPUTS = ("/proc", "/sys", "/dev")


def eligible(outputs: tuple[str, ...], push: bool, build_all: bool) -> bool:
    return not push and not build_all and all(spec == "docker" for spec in outputs)


def full_references(tags: tuple[str, ...]) -> tuple[str, ...] | None:
    """The --tag values when every one is a whole `name:tag` reference, else None. The
    build uses such tags as given, so they are no input of what it builds: one record
    answers for any of them (CI tags each build `app:$SHA`), and the engine is asked to
    tag the recorded image. A bare tag takes its name from the project: it stays in the
    key. A malformed one gets None, and the normal build's error."""
    from pydeploy.plan import references  # noqa: PLC0415 - stdlib only, and only with --tag

    if not tags or any(":" not in t and "/" not in t for t in tags):
        return None
    if any(references.tag_problem(t) is not None for t in tags):
        return None
    return tuple(dict.fromkeys(tags))


def record_file(args: Mapping[str, object]) -> Path:
    """Where the record of this command (with these arguments, here, now) lives."""
    cwd = str(Path.cwd())
    return fastpath.record_path(cache_root(), fastpath.key(args, os.environ, cwd))


def answer(
    path: Path, retag: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], list[str]] | None:
    """The recorded result and the build's warnings when nothing they depend on changed,
    else None. With `retag` (full_references), the recorded image is asked for by ID and
    tagged with those references instead of checked under its recorded tags. Timings say
    that this was the fast path, and nothing was installed or checked."""
    start = time.monotonic()
    record = fastpath.load(path)
    if record is None or not fastpath.verify(record):
        return None
    from pydeploy.engine import quick  # noqa: PLC0415 - only once the host matched

    images = dict(record.images)
    image_id = record.result.get("image_id")
    if retag is not None:
        if not isinstance(image_id, str):
            return None
        for tag in record.result.get("tags", []):
            images.pop(tag, None)
        images[image_id] = image_id
    found = quick.image_ids(images)
    if found is None or any(found.get(name) != ident for name, ident in images.items()):
        return None
    if retag is not None and not all(quick.tag(str(image_id), ref) for ref in retag):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # `prune` ages records by their last use
    result = dict(record.result)
    if retag is not None:
        result["tags"] = list(retag)
    result["check"] = {**result.get("check", {}), "cached": True}
    result["dependencies"] = {**result.get("dependencies", {}), "cached": True}
    result["timings"] = {"unchanged": round(time.monotonic() - start, 3)}
    return result, record.warnings


def checked(path: Path) -> str | None:
    """What the `check` recorded at `path` printed, when everything it read (files,
    listings, probes, git) reads the same; else None, and the command checks."""
    record = fastpath.load(path)
    text = record.result.get("check") if record is not None else None
    if record is None or not isinstance(text, str) or not fastpath.verify(record):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # `prune` ages records by their last use
    return text


@contextlib.contextmanager
def recording(path: Path) -> Iterator[Recorder]:
    with fastpath.recording() as reads:
        yield Recorder(path, reads)


class Recorder:
    """Keeps the record of a build that succeeded (`save`)."""

    def __init__(self, path: Path, reads: fastpath.Reads) -> None:
        self.path, self.reads = path, reads

    def save(self, start: Path, plan: BuildPlan, built: BuildResult, warnings: list[str]) -> None:
        """Written atomically, and never a reason for the build to fail: without a
        record the next build is a normal one. `start`: the directory the build was
        given, where the search for the project began (a pyproject.toml created there
        or between it and the root would be a new root, though planning lists neither)."""
        if not built.base_image_id:
            return
        roots = [start.resolve() / "pyproject.toml"]
        roots += (r for r in (plan.project.root, plan.project.workspace_root) if r is not None)
        images = dict.fromkeys(built.tags, built.image.image_id)
        images[plan.base_image] = built.base_image_id
        self._keep(roots, images, built.to_json(), warnings)

    def save_check(self, roots: list[Path], text: str) -> None:
        """The record of a check that passed and printed `text`; `roots`: the directories
        it probed above (the project roots, and where the search for one started)."""
        self._keep(roots, {}, {"check": text}, [])

    def _keep(
        self,
        roots: list[Path],
        images: dict[str, str],
        result: dict[str, Any],
        warnings: list[str],
    ) -> None:
        from pydeploy import atomic  # noqa: PLC0415

        ignored = [cache_root(), Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)]
        record = fastpath.make_record(
            self.reads,
            project_roots=roots,
            ignored=[*ignored, *(Path(p) for p in _NOT_INPUTS)],
            images=images,
            result=result,
            warnings=warnings,
        )
        if record is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.path, json.dumps(record.to_doc()))
