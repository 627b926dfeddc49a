"""Run the project's build commands in a container of its runtime image (stdlib only:
the image's interpreter runs it, as root, before anything else).

`python build_commands.py JOB.json`. It makes every directory under the app directory
(and each declared output directory) the runtime user's, so commands can create files
(collectstatic's STATIC_ROOT, compiled translations beside their sources) while the
files the app layer shipped stay root's; then drops to the runtime uid for good and
runs the commands in order, in the app directory, with the job's environment. A
failing command ends the run with its exit code; the host reads the protocol lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MARK = "##pydeploy:"


def emit(kind: str, text: str = "") -> None:
    sys.stdout.write(f"{MARK}{kind} {text}".rstrip() + "\n")
    sys.stdout.flush()


def hand_over(app_dir: str, outputs: list[str], uid: int, gid: int) -> None:
    """Directories (not files) become the uid's: new files can be written anywhere,
    what the app layer holds cannot be changed."""
    for top in [app_dir, *outputs]:
        Path(top).mkdir(parents=True, exist_ok=True)
        for current, dirs, _files in os.walk(top):
            os.chown(current, uid, gid)
            dirs[:] = [d for d in dirs if not (Path(current) / d).is_symlink()]


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def run(job: dict[str, Any]) -> int:
    uid, gid, app_dir = int(job["uid"]), int(job["gid"]), str(job["app_dir"])
    hand_over(app_dir, list(job["outputs"]), uid, gid)
    drop_privileges(uid, gid)
    # No home directory exists for the runtime user; tools that cache there get /tmp.
    base_env = {**os.environ, "HOME": "/tmp", **job["env"]}  # noqa: S108
    for index, command in enumerate(job["commands"]):
        emit("begin", str(index))
        sys.stdout.flush()
        try:
            code = subprocess.call(
                command["argv"],
                cwd=app_dir,
                env={**base_env, **command["env"]},
                stdin=subprocess.DEVNULL,
                stdout=sys.stdout,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:  # the program does not exist or cannot run
            sys.stdout.write(f"{command['argv'][0]}: {exc.strerror}\n")
            code = 127
        if code != 0:
            emit("failed", json.dumps({"index": index, "code": code}))
            return code
        emit("end", str(index))
    return 0


def main(argv: list[str]) -> int:
    with Path(argv[1]).open(encoding="utf-8") as handle:
        return run(json.load(handle))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
