"""What pydeploy changes about the base image's own files (issue 10): the setuid/setgid
bits dropped by a layer on top (CIS Docker 4.8), and a `user-id` that would alias one of
the base's accounts refused. Synthetic base layers, no engine."""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path

import pytest

from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.layers import assemble
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import BaseImage
from pydeploy.oci.layer import build_layer
from pydeploy.plan.planner import BuildPlan, make_plan

PASSWD = b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\n"
GROUP = b"root:x:0:\nshadow:x:42:\nmail:x:8:\n"


def plan_with(root: Path, table: str = "") -> BuildPlan:
    root.mkdir(exist_ok=True)
    (root / "main.py").write_text("app = None\n")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1.0"\n[tool.pydeploy]\napp = "main:app"\n' + table
    )
    return make_plan(load_project(root))


@pytest.mark.parametrize(
    ("uid", "what"),
    [(42, "base image's group `shadow` (gid 42 in /etc/group)"), (65534, "user `nobody` (uid")],
)
def test_a_user_id_the_base_uses_is_refused(tmp_path: Path, uid: int, what: str) -> None:
    plan = plan_with(tmp_path, f"user-id = {uid}\n")
    with pytest.raises(ConfigError) as caught:
        assemble.user_entries(plan, PASSWD, GROUP)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"tool.pydeploy.user-id = {uid} is already")
    assert what in caught.value.message


def test_the_default_user_id_and_an_existing_app_user_are_fine(tmp_path: Path) -> None:
    plan = plan_with(tmp_path)
    entries = assemble.user_entries(plan, PASSWD, GROUP)
    passwd = next(e for e in entries if e.path == "etc/passwd").data or b""
    assert passwd.endswith(b"app:x:10001:10001:pydeploy app user:/home/app:/usr/sbin/nologin\n")
    # A pydeploy image used as a base already has the app user: reused, not refused.
    again = assemble.user_entries(plan, passwd, GROUP + b"app:x:10001:\n")
    assert next(e for e in again if e.path == "etc/passwd").data == passwd


def scans_of(store: BlobStore, *layers: list[FileEntry]) -> list[assemble.LayerScan]:
    """The base layers' scans, read back from real tars in the store."""
    built = tuple(build_layer(e, store=store, epoch=1, role="base") for e in layers)
    return assemble.stored_layer_scans(store, BaseImage(b"{}", built))


def test_setuid_and_setgid_files_are_whited_out_and_directories_lose_the_bits(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path / "store")
    lower = [
        FileEntry("usr", "dir", 0o755),
        FileEntry("usr/bin", "dir", 0o755),
        FileEntry("usr/bin/su", "file", 0o4755, data=b"su-binary"),
        FileEntry("usr/bin/newgrp", "hardlink", 0o4755, linkname="usr/bin/su"),
        FileEntry("usr/bin/chage", "file", 0o2755, gid=42, data=b"chage"),
        FileEntry("usr/bin/passwd", "file", 0o4755, data=b"passwd"),
        FileEntry("usr/bin/ls", "file", 0o755, data=b"ls"),
        FileEntry("usr/lib", "dir", 0o750, gid=7),
        FileEntry("usr/lib/helper", "file", 0o4754, gid=7, data=b"helper"),
        FileEntry("var", "dir", 0o755),
        FileEntry("var/mail", "dir", 0o2775, gid=8),
        FileEntry("opt", "dir", 0o755),
        FileEntry("opt/tool", "dir", 0o755),
        FileEntry("opt/tool/suid", "file", 0o4755, data=b"x"),
        FileEntry("sbin", "dir", 0o755),
        # A link's header may lack the bits: it shares the inode (and the bits) anyway.
        FileEntry("sbin/tool", "file", 0o4755, data=b"tool"),
    ]
    upper = [
        FileEntry("usr/bin/.wh.passwd", "file", 0o644, data=b""),  # removed by a later layer
        FileEntry("usr/bin/chage", "file", 0o755, data=b"chage 2"),  # replaced, bits gone
        FileEntry("opt/tool/.wh..wh..opq", "file", 0o644, data=b""),  # emptied
    ]
    scans = scans_of(store, lower, upper)
    link = next(m for name, m in scans[0] if name == "sbin/tool")
    scans[0].append(("sbin/tool-link", dataclasses.replace(link, kind="hardlink", mode=0o755,
                                                           linkname="sbin/tool")))  # fmt: skip
    entries = assemble.unprivileged_entries(scans)
    found = {e.path: (e.kind, oct(e.mode), e.uid, e.gid, e.data) for e in entries}
    whiteout = ("file", "0o644", 0, 0, b"")
    assert found == {
        "sbin": ("dir", "0o755", 0, 0, None),
        "sbin/.wh.tool": whiteout,
        "sbin/.wh.tool-link": whiteout,
        "usr": ("dir", "0o755", 0, 0, None),
        "usr/bin": ("dir", "0o755", 0, 0, None),
        "usr/bin/.wh.su": whiteout,
        "usr/bin/.wh.newgrp": whiteout,
        "usr/lib": ("dir", "0o750", 0, 7, None),
        "usr/lib/.wh.helper": whiteout,
        "var": ("dir", "0o755", 0, 0, None),
        "var/mail": ("dir", "0o775", 0, 8, None),
    }
    layer = assemble.layer(store, entries, "no-setuid")
    with tarfile.open(store.path(layer.diff_id)) as tar:
        assert not [m.name for m in tar if m.mode & 0o6000]
    # Whiteouts, not copies: the layer carries none of the programs.
    assert layer.uncompressed_size == 512 * (len(entries) + 2)


def test_a_base_without_setuid_files_needs_no_layer(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    plain = [FileEntry("usr/bin/ls", "file", 0o755, data=b"ls"), FileEntry("tmp", "dir", 0o1777)]
    assert assemble.unprivileged_entries(scans_of(store, plain)) == []


def test_keep_setuid_plans_no_such_layer(tmp_path: Path) -> None:
    assert "no-setuid" in [la.role for la in plan_with(tmp_path / "a").layers]
    kept = plan_with(tmp_path / "b", "keep-setuid = true\n")
    assert kept.keep_setuid
    assert "no-setuid" not in [la.role for la in kept.layers]
