"""The builder script's target mode, in pieces: the venv layout it writes for an
interpreter this host lacks, the scripts it moves (shebangs and RECORD), the compiled
local wheels it refuses, and how uv is told the target."""

from __future__ import annotations

import base64
import csv
import hashlib
from pathlib import Path
from typing import Any

from pydeploy.builder.hostinstall import Target, no_wheel
from pydeploy.builder.stage import PythonInfo
from pydeploy.payload import builder_script as script

TARGET: script.TargetJob = {
    "python_platform": "aarch64-manylinux_2_36",
    "python_version": "3.11.2",
    "executable": "/usr/bin/python3.11",
    "site_packages": "lib/python3.11/site-packages",
    "venv_path": "/opt/venv",
    "compile_python": "",
}


def test_the_venv_layout_names_the_base_s_interpreter(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    script.write_venv_layout(venv, TARGET, "0.13.9")
    config = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in config
    assert "version_info = 3.11.2\n" in config
    assert "include-system-site-packages = false\n" in config
    assert (venv / "bin" / "python").readlink() == Path("/usr/bin/python3.11")
    assert (venv / "bin" / "python3.11").readlink() == Path("python")
    assert (venv / "lib64").readlink() == Path("lib")
    assert (venv / "lib" / "python3.11" / "site-packages").is_dir()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_scripts_move_to_bin_with_the_image_s_interpreter_and_their_record_follows(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    script.write_venv_layout(venv, TARGET, "0.13.9")
    site = venv / TARGET["site_packages"]
    (site / "bin").mkdir()
    original = b"#!/root/.pyenv/versions/3.11.7/bin/python\nimport sys\nprint(sys.argv)\n"
    (site / "bin" / "tool").write_bytes(original)
    (site / "bin" / "tool").chmod(0o755)
    dist = site / "tool-1.0.dist-info"
    dist.mkdir()
    (dist / "RECORD").write_text(
        f"bin/tool,{_record_hash(original)},{len(original)}\ntool/__init__.py,,\n"
    )
    script.move_scripts(site, venv, TARGET)
    moved = venv / "bin" / "tool"
    assert moved.read_bytes() == b"#!/opt/venv/bin/python\nimport sys\nprint(sys.argv)\n"
    assert moved.stat().st_mode & 0o777 == 0o755
    assert not (site / "bin").exists()
    rows = list(csv.reader((dist / "RECORD").read_text().splitlines()))
    data = moved.read_bytes()
    assert rows[0] == ["../../../bin/tool", _record_hash(data), str(len(data))]
    assert rows[1] == ["tool/__init__.py", "", ""]


def test_a_package_this_host_compiled_is_named(tmp_path: Path) -> None:
    for name, tag in (("my_lib", "cp311-cp311-linux_x86_64"), ("pure", "py3-none-any"),
                      ("numpy", "cp311-cp311-manylinux_2_17_aarch64")):  # fmt: skip
        dist = tmp_path / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
    # numpy's wheel came from the index for the target; a pure sdist built here is fine.
    assert script.host_built_packages(tmp_path) == ["my-lib"]


def test_uv_resolves_for_the_target_s_version_and_platform() -> None:
    job: Any = {"python": "/usr/bin/python3", "target": TARGET}
    assert script.python_args(job) == [
        "--python-version", "3.11.2", "--python-platform", "aarch64-manylinux_2_36",
    ]  # fmt: skip
    job = {"python": "/usr/bin/python3", "target": None}
    assert script.python_args(job) == [
        "--python", "/usr/bin/python3",
    ]  # fmt: skip


def test_the_target_s_uv_platform_follows_its_libc_and_machine() -> None:
    python = PythonInfo("/usr/bin/python3.11", "3.11.2", "lib/python3.11/site-packages")
    assert Target(python, "aarch64", ("glibc", "2.36")).python_platform() == (
        "aarch64-manylinux_2_36"
    )
    assert Target(python, "x86_64", ("musl", "1.2")).python_platform() == "x86_64-musllinux_1_2"
    assert (
        Target(python, "x86_64", ("glibc", "2.36")).key()
        != Target(python, "aarch64", ("glibc", "2.36")).key()
    )


def test_the_package_without_a_wheel_is_read_from_uv_s_error() -> None:
    pinned = (
        "  cause: Because psycopg2==2.9.9 has no usable wheels and you require psycopg2==2.9.9, "
        "we can conclude that your requirements are unsatisfiable.\n\n"
        "hint: Wheels are required for `psycopg2` because building from source is disabled"
    )
    assert no_wheel(pinned) == "psycopg2"
    assert no_wheel("Because all versions of lxml has no usable wheels and ...") == "lxml"
    built = ("cause: The built wheel `fastsum-1.0.0-cp311-cp311-linux_x86_64.whl` is not "
             "compatible with the target Python 3.11 on Linux aarch64.")  # fmt: skip
    assert no_wheel(built) == "fastsum"
    assert no_wheel("error: Failed to build `psycopg2==2.9.9`\n  cause: ...") == "psycopg2"
    assert no_wheel("error: some other failure") is None
