"""The host check's stand-in for the image's read-only root filesystem (an audit hook:
it cannot be removed, so each case runs in its own interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = (
    Path(__file__).resolve().parents[3] / "builder" / "pydeploy" / "payload" / "builder_script.py"
)

PROBE = """
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("bs", sys.argv[1])
bs = importlib.util.module_from_spec(spec); spec.loader.exec_module(bs)
allowed, denied = sys.argv[2], sys.argv[3]
bs.confine_writes([allowed])
open(os.path.join(allowed, "ok.txt"), "w").write("fine")
os.makedirs(os.path.join(allowed, "sub", "deeper"))
open(os.path.join(denied, "existing.txt")).read()  # reading stays allowed
for attempt in (
    lambda: open(os.path.join(denied, "new.txt"), "w"),
    lambda: open(os.path.join(denied, "existing.txt"), "a"),
    lambda: os.open(os.path.join(denied, "raw"), os.O_CREAT | os.O_WRONLY),
    lambda: os.mkdir(os.path.join(denied, "logs")),
    lambda: os.remove(os.path.join(denied, "existing.txt")),
    lambda: os.rename(os.path.join(allowed, "ok.txt"), os.path.join(denied, "moved.txt")),
):
    try:
        attempt()
    except OSError as exc:
        print(exc.errno, os.path.basename(exc.filename))
    else:
        print("written")
"""


def test_writes_outside_the_writable_directories_fail_as_on_a_read_only_root(
    tmp_path: Path,
) -> None:
    allowed, denied = tmp_path / "tmp", tmp_path / "app"
    allowed.mkdir()
    denied.mkdir()
    (denied / "existing.txt").write_text("data")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(SCRIPT), str(allowed), str(denied)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:6] == [
        "30 new.txt", "30 existing.txt", "30 raw", "30 logs", "30 existing.txt", "30 moved.txt",
    ]  # fmt: skip
    assert (allowed / "ok.txt").read_text() == "fine"
    assert (allowed / "sub" / "deeper").is_dir()
    assert sorted(p.name for p in denied.iterdir()) == ["existing.txt"]
