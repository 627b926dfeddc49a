from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from tests.unit.base.images import (
    GLIBC_BANNER,
    accounts,
    config_for,
    debian_layer,
    file,
    layer_tar,
    link,
    whiteout,
)

from pydeploy.base.facts import MergedView, base_facts, facts_of
from pydeploy.builder.stage import PythonInfo
from pydeploy.errors import BaseImageError
from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import BaseImage
from pydeploy.oci.layer import Layer


def view_of(*layers: list[FileEntry]) -> MergedView:
    view = MergedView()
    for entries in layers:
        view.add_layer(io.BytesIO(layer_tar(entries)))
    return view


def config(env: list[str] | None = None) -> dict[str, object]:
    document: dict[str, object] = json.loads(config_for([], env=env))
    return document


def test_debian_base() -> None:
    facts = facts_of(view_of(debian_layer()), config(), "base")
    assert facts.python == PythonInfo(
        "/usr/bin/python3.11", "3.11.2", "lib/python3.11/site-packages"
    )
    assert facts.libc == ("glibc", "2.36")
    assert facts.passwd.startswith(b"root:x:0:0")
    assert facts.env == ("PATH=/usr/bin",)


def test_official_image_shape() -> None:
    """python:3.12-slim: the interpreter under /usr/local, its version in Env."""
    layer = [
        *accounts(),
        file("usr/lib/x86_64-linux-gnu/libc.so.6", GLIBC_BANNER),
        link("usr/local/bin/python3", "python3.12"),
        file("usr/local/bin/python3.12", b"\x7fELF", 0o755),
        file("usr/local/lib/python3.12/os.py", b""),
    ]
    facts = facts_of(view_of(layer), config(["PYTHON_VERSION=3.12.7"]), "python:3.12-slim")
    assert facts.python.executable == "/usr/local/bin/python3.12"
    assert facts.python.version == "3.12.7"


def test_musl_base_and_version_from_the_interpreter() -> None:
    layer = [
        *accounts(),
        file("lib/ld-musl-aarch64.so.1", b"\x7fELF"),
        link("lib/libc.musl-aarch64.so.1", "ld-musl-aarch64.so.1"),
        file("lib/apk/db/installed", b"P:musl\nV:1.2.4-r2\n\nP:busybox\nV:1.36\n"),
        link("usr/bin/python3", "python3.11"),
        file("usr/bin/python3.11", b"\x7fELF\x003.11.9\x00more", 0o755),
        file("usr/lib/python3.11/os.py", b""),
    ]
    facts = facts_of(view_of(layer), config(), "alpine")
    assert facts.libc == ("musl", "1.2")
    assert facts.python.version == "3.11.9"


def test_symlink_chain_through_directory_links_and_absolute_targets() -> None:
    layer = [
        *accounts(),
        file("usr/lib/x86_64-linux-gnu/libc.so.6", GLIBC_BANNER),
        link("usr/local/bin/python3", "/usr/bin/python3"),  # absolute, into a linked dir
        link("usr/bin", "../opt/bin"),
        link("opt/bin/python3", "./python3.10"),
        file("opt/bin/python3.10", b"x", 0o755),
        file("opt/lib/python3.10/os.py", b""),
    ]
    facts = facts_of(view_of(layer), config(["PYTHON_VERSION=3.10.14"]), "base")
    assert facts.python.executable == "/opt/bin/python3.10"


def test_whiteouts_hide_lower_layers() -> None:
    upper = [whiteout("etc/passwd")]
    with pytest.raises(BaseImageError, match="base has no /etc/passwd"):
        facts_of(view_of(debian_layer(), upper), config(), "base")
    opaque = [file("etc/.wh..wh..opq", b""), file("etc/passwd", b"app:x:1:1::/:/bin/sh\n"),
              file("etc/group", b"app:x:1:\n")]  # fmt: skip
    facts = facts_of(view_of(debian_layer(), opaque), config(), "base")
    assert facts.passwd == b"app:x:1:1::/:/bin/sh\n"


def test_a_layer_replacing_a_link_with_what_is_not_kept_drops_it() -> None:
    upper = [FileEntry("usr/bin/python3", "dir", 0o755)]
    with pytest.raises(BaseImageError, match="python3 interpreter"):
        facts_of(view_of(debian_layer(), upper), config(), "base")


def test_a_bare_python3_takes_its_version_from_the_standard_library_beside_it() -> None:
    upper = [file("usr/bin/python3", b"#!/bin/sh\n", 0o755), whiteout("usr/bin/python3.11")]
    facts = facts_of(view_of(debian_layer(), upper), config(), "base")
    assert facts.python == PythonInfo("/usr/bin/python3", "3.11.2", "lib/python3.11/site-packages")


@pytest.mark.parametrize(
    ("removed", "missing"),
    [
        ("usr/lib/x86_64-linux-gnu/libc.so.6", "C library"),
        ("usr/bin/python3.11", "python3 interpreter"),
        ("usr/lib/python3.11", "standard library /usr/lib/python3.11"),
        ("var/lib/dpkg/status", "exact version of /usr/bin/python3.11"),
        ("etc/group", "/etc/group"),
    ],
)
def test_missing_facts_name_the_base_and_what_is_missing(removed: str, missing: str) -> None:
    view = view_of(debian_layer(), [whiteout(removed)])
    with pytest.raises(BaseImageError, match=r"the base image team/base:1 has no") as caught:
        facts_of(view, config(), "team/base:1")
    assert missing in caught.value.message


def test_a_symlink_loop_is_no_interpreter() -> None:
    layer = [*accounts(), link("usr/bin/python3", "python3b"), link("usr/bin/python3b", "python3")]
    with pytest.raises(BaseImageError, match="python3 interpreter"):
        facts_of(view_of(layer), config(), "base")


def test_facts_are_cached_by_image_id(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    tar = store.put_bytes(layer_tar(debian_layer()))
    layer = Layer("base", tar.digest, tar.digest, tar.size, tar.size)
    base = BaseImage(config_for([tar.digest]), (layer,))
    first = base_facts(store, base, "base")
    store.path(tar.digest).unlink()  # a second read would need the layer
    assert base_facts(store, base, "base") == first
    other = BaseImage(config_for([tar.digest], env=["X=1"]), (layer,))
    assert sha256_digest(other.config_bytes) != base.image_id
    with pytest.raises(FileNotFoundError):
        base_facts(store, other, "base")
