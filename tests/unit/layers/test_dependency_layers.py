"""The venv split into dependency layers (pydeploy.layers.dependencies): who owns what by
RECORD, heavy distributions alone, stable name buckets, and digests that only change for
the layer whose content changed. Synthetic venvs, no engine."""

from __future__ import annotations

from pathlib import Path

from pydeploy.layers import dependencies
from pydeploy.layers.dependencies import HEAVY_BYTES, VENV_ROLE, Part, bucket, split
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.layer import build_layer

SITE = "opt/venv/lib/python3.12/site-packages"
SKELETON = [
    FileEntry("opt/venv", "dir", 0o755),
    FileEntry("opt/venv/pyvenv.cfg", "file", 0o644, data=b"home = /usr/local/bin\n"),
    FileEntry("opt/venv/bin/python", "symlink", 0o777, linkname="/usr/local/bin/python3"),
    FileEntry(f"{SITE}/_virtualenv.py", "file", 0o644, data=b"# uv's\n"),
]
PINNED = [2, 3, 1, 3, 3]  # fastapi, pydantic, starlette, anyio, idna


def dist(name: str, files: dict[str, bytes], version: str = "1.0") -> list[FileEntry]:
    """A distribution's installed files, its dist-info and a RECORD listing them all."""
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {**files, f"{info}/METADATA": f"Name: {name}\n".encode()}
    record = "".join(f"{path},sha256=x,{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    entries = [
        FileEntry(f"{SITE}/{path}", "file", 0o644, data=data) for path, data in files.items()
    ]
    return [*entries, FileEntry(f"{SITE}/{info}/RECORD", "file", 0o644, data=record.encode())]


def small(name: str) -> list[FileEntry]:
    return dist(name, {f"{name}/__init__.py": f"NAME = {name!r}\n".encode()})


def roles_of(parts: list[Part]) -> dict[str, set[str]]:
    return {part.role: {entry.path for entry in part.entries} for part in parts}


def digests(tmp: Path, entries: list[FileEntry]) -> dict[str, str]:
    store = BlobStore(tmp)
    return {
        part.role: build_layer(part.entries, store=store, epoch=1, role=part.role).digest
        for part in split(entries)
    }


def test_buckets_are_by_normalized_name_and_pinned() -> None:
    assert bucket("Typing_Extensions") == bucket("typing-extensions") == bucket("typing.extensions")
    # Pinned: moving a distribution to another bucket re-uploads two layers everywhere.
    assert [bucket(n) for n in ("fastapi", "pydantic", "starlette", "anyio", "idna")] == PINNED
    assert {bucket(f"dist{i}") for i in range(30)} == {1, 2, 3}


def test_each_distribution_lands_in_its_bucket_and_the_rest_in_the_venv_layer() -> None:
    entries = [*SKELETON, *small("fastapi"), *small("idna"), *small("anyio")]
    parts = roles_of(split(entries))
    assert parts[VENV_ROLE] == {e.path for e in SKELETON}
    for name in ("fastapi", "idna", "anyio"):
        assert f"{SITE}/{name}/__init__.py" in parts[f"dependencies-group-{bucket(name)}"]
    assert next(iter(parts)) == VENV_ROLE
    assert len(parts) <= 4


def test_unrecorded_bytecode_and_directories_follow_their_distribution() -> None:
    entries = [
        *SKELETON,
        *dist("six", {"six.py": b"x = 1\n"}),
        *dist("idna", {"idna/core.py": b"y = 2\n"}),
        FileEntry(f"{SITE}/__pycache__/six.cpython-312.pyc", "file", 0o644, data=b"pyc"),
        FileEntry(f"{SITE}/idna/__pycache__", "dir", 0o755),
        FileEntry(f"{SITE}/idna/__pycache__/core.cpython-312.pyc", "file", 0o644, data=b"pyc"),
    ]
    parts = roles_of(split(entries))
    assert f"{SITE}/__pycache__/six.cpython-312.pyc" in parts[f"dependencies-group-{bucket('six')}"]
    idna = parts[f"dependencies-group-{bucket('idna')}"]
    assert {f"{SITE}/idna/__pycache__", f"{SITE}/idna/__pycache__/core.cpython-312.pyc"} <= idna


def test_a_namespace_shared_by_two_distributions_stays_in_the_venv_layer() -> None:
    # Two names in different buckets, both under the `google` namespace.
    one, two = next(
        (a, b)
        for a in ("protobuf", "api-core", "auth")
        for b in ("cloud-storage", "genai", "resumable")
        if bucket(a) != bucket(b)
    )
    entries = [
        *dist(one, {"google/one/a.py": b"a"}),
        *dist(two, {"google/two/b.py": b"b"}),
        FileEntry(f"{SITE}/google", "dir", 0o755),
        FileEntry(f"{SITE}/google/__pycache__/stray.cpython-312.pyc", "file", 0o644, data=b"c"),
    ]
    parts = roles_of(split(entries))
    assert {f"{SITE}/google", f"{SITE}/google/__pycache__/stray.cpython-312.pyc"} <= parts[
        VENV_ROLE
    ]
    assert f"{SITE}/google/one/a.py" in parts[f"dependencies-group-{bucket(one)}"]


def test_a_hard_link_stays_with_its_target() -> None:
    entries = [
        *dist("numpy-ish", {"lib/x.so": b"\x7fELF"}),
        FileEntry(f"{SITE}/lib/y.so", "hardlink", 0o644, linkname=f"{SITE}/lib/x.so"),
    ]
    (part,) = [p for p in split(entries) if f"{SITE}/lib/x.so" in {e.path for e in p.entries}]
    assert f"{SITE}/lib/y.so" in {e.path for e in part.entries}


def test_heavy_distributions_get_their_own_layers_up_to_four() -> None:
    # heavyN installs HEAVY_BYTES + N KB; `just-under` 1 KB less than the threshold.
    heavy = [
        dist(f"heavy{i}", {f"h{i}/big.bin": b"h" * (HEAVY_BYTES + i * 1024)}) for i in range(5)
    ]
    under = dist("just-under", {"u/big.bin": b"u" * (HEAVY_BYTES - 1024)})
    parts = split([*SKELETON, *under, *[e for d in heavy for e in d]])
    roles = [part.role for part in parts]
    # The four largest, largest first; the fifth and the one under the threshold go to
    # their buckets.
    assert roles[:5] == [VENV_ROLE, "dependencies-heavy4", "dependencies-heavy3",
                         "dependencies-heavy2", "dependencies-heavy1"]  # fmt: skip
    assert all(role.startswith("dependencies-group-") for role in roles[5:])
    assert len(parts) <= 8
    grouped = {e.path for p in parts[5:] for e in p.entries}
    assert {f"{SITE}/h0/big.bin", f"{SITE}/u/big.bin"} <= grouped
    assert {e.path for e in parts[1].entries} == {e.path for e in heavy[4]}


def test_identical_dependency_sets_give_identical_digests(tmp_path: Path) -> None:
    def venv() -> list[FileEntry]:
        return [*SKELETON, *small("fastapi"), *small("idna"), *small("anyio"), *small("sniffio")]

    assert digests(tmp_path / "a", venv()) == digests(tmp_path / "b", venv())


def test_adding_one_small_distribution_changes_one_layer_only(tmp_path: Path) -> None:
    names = ["fastapi", "idna", "anyio", "sniffio", "starlette", "pydantic"]
    before = digests(tmp_path / "a", [*SKELETON, *[e for n in names for e in small(n)]])
    added = "python-dotenv"
    after = digests(tmp_path / "b", [*SKELETON, *[e for n in [*names, added] for e in small(n)]])
    changed = {role for role in after if before.get(role) != after[role]}
    assert changed == {f"dependencies-group-{bucket(added)}"}


def test_content_key_follows_content_role_and_recipe() -> None:
    part = split([*SKELETON, *small("idna")])[1]
    same = split([*SKELETON, *small("idna")])[1]
    other = split([*SKELETON, *dist("idna", {"idna/__init__.py": b"changed\n"})])[1]
    key = dependencies.content_key("r1", part)
    assert key == dependencies.content_key("r1", same)
    assert key != dependencies.content_key("r1", other)
    assert key != dependencies.content_key("r2", part)
    assert dependencies.is_dependency_role(part.role)
    assert dependencies.is_dependency_role(VENV_ROLE)
