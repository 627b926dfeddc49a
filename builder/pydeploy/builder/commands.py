"""The build commands (`build-commands`, Django's collectstatic): run in a container of the
runtime image as it stands before them (base, system packages, user, venv, app), and
what they wrote under /app and the declared output directories, as layer entries.

Nothing here decides which commands run (plan/buildcommands.py does); the layer is
cached by the caller, keyed by everything that reaches the container.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path

from pydeploy.engine.client import Engine
from pydeploy.errors import BuildCommandError
from pydeploy.oci.entries import FileEntry, entries_from_tar
from pydeploy.payload import source
from pydeploy.payload.build_commands import MARK
from pydeploy.plan.buildcommands import BuildCommand
from pydeploy.plan.planner import APP_DIR, VENV, BuildPlan

JOB_DIR = "/run/pydeploy-build"
TAIL_LINES = 25
# Written by Python itself when the commands import the app: never build output.
_NOT_OUTPUT = ("__pycache__",)


def job_document(plan: BuildPlan, check_env: Mapping[str, str]) -> dict[str, object]:
    """What the payload gets: who runs the commands, where, with which environment.
    The check-env values are in here (and so in the cache key's digest), never in a layer."""
    return {
        "uid": plan.user_id,
        "gid": plan.user_id,
        "app_dir": APP_DIR,
        "outputs": list(plan.build_outputs),
        # No .pyc files next to the sources: the venv and app layers have theirs.
        "env": {**dict(check_env), "PYTHONDONTWRITEBYTECODE": "1"},
        "commands": [{"argv": list(c.argv), "env": dict(c.env)} for c in plan.build_commands],
    }


def run_build_commands(  # noqa: PLR0913 - keyword-only inputs, named at the one call
    engine: Engine,
    image: str,
    *,
    plan: BuildPlan,
    check_env: Mapping[str, str],
    scratch: Path,
    on_line: Callable[[str], None],
    mask: Callable[[str], str],
) -> list[FileEntry]:
    """Run the plan's build commands in `image` (present in the engine) and return what
    they added or changed, root-owned like the app layer. Raises BuildCommandError with
    the failing command, its exit code and its output tail."""
    job = json.dumps(job_document(plan, check_env), sort_keys=True).encode()
    argv = [f"{VENV}/bin/python", f"{JOB_DIR}/build_commands.py", f"{JOB_DIR}/job.json"]
    network = engine.network_mode(plan.network)
    lines: list[str] = []
    current: list[int] = []

    def keep(line: str) -> None:
        if line.startswith(MARK):
            kind, _, text = line[len(MARK) :].partition(" ")
            if kind == "begin":
                current[:] = [int(text)]
                lines.clear()
                on_line(f"$ {plan.build_commands[int(text)].display}")
            return
        lines.append(line)
        on_line(line)

    with engine.container(image, argv, network=network) as box:
        box.put_files(JOB_DIR, {"build_commands.py": source("build_commands.py"), "job.json": job})
        outcome = box.follow(keep)
        if outcome.exit_code != 0:
            raise _failure(
                plan.build_commands, current, outcome.exit_code, [mask(ln) for ln in lines]
            )
        # `docker diff`: the directories the payload handed over show as modified, so a
        # directory counts only when new; files count when new or rewritten.
        changed = {
            path.lstrip("/"): kind
            for path, kind in box.changes()
            if kind in {"added", "modified"} and _kept(path.lstrip("/"), plan)
        }
        entries: list[FileEntry] = []
        for top in [APP_DIR, *plan.build_outputs]:
            rel = top.strip("/")
            spool = scratch / "build-output" / rel.replace("/", "_")
            found = entries_from_tar(
                box.get_archive(top), strip_prefix=posixpath.basename(rel), dest_prefix=rel,
                spool_dir=spool,
            )  # fmt: skip
            entries += [
                e
                for e in found
                if e.path in changed and (e.kind != "dir" or changed[e.path] == "added")
            ]
    return entries


def _kept(path: str, plan: BuildPlan) -> bool:
    roots = [r.strip("/") for r in (APP_DIR, *plan.build_outputs)]
    inside = any(path == r or path.startswith(r + "/") for r in roots)
    return inside and not any(part in _NOT_OUTPUT for part in path.split("/"))


def _failure(
    commands: tuple[BuildCommand, ...], current: list[int], code: int, lines: list[str]
) -> BuildCommandError:
    if not current:
        return BuildCommandError(
            "The build commands could not start in the runtime image (exit code "
            f"{code}):\n" + "\n".join(lines[-TAIL_LINES:]),
            hint="Run with --verbose to see the container's output.",
        )
    command = commands[current[0]]
    tail = "\n".join(f"    {line}" for line in lines[-TAIL_LINES:])
    return BuildCommandError(
        f"The build command `{command.display}` ({command.origin}) failed with exit code "
        f"{code}. Its last lines:\n{tail}",
        hint=(
            "Fix the command or the project; it runs in /app as the runtime user, with "
            "`env` and `[tool.pydeploy.check-env]`, without network services."
        ),
    )
