"""`pydeploy prune` planning from a fake inventory (ages, markers, in use, --all, dead
builds' containers, a build holding the host cache), the host-cache inventory of a real
directory, the lock builds and prune meet on, and host-side removal."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import cast

from pydeploy.cache import prune as cachegc
from pydeploy.cache.prune import CachedImage, CachedVolume, HostEntry, Inventory, Plan, Policy
from pydeploy.cachekeys import LABEL_VENV_KEY, MARKER, USED
from pydeploy.engine.client import Engine
from pydeploy.engine.types import DiskUsage, ImageInfo, VolumeInfo

NOW = 2_000_000_000.0
DAY = 86400.0
OLD = NOW - 40 * DAY  # beyond the default 30 days
RECENT = NOW - 60.0  # within the one-hour grace
HOURS_AGO = NOW - 3 * 3600.0  # past the grace, well within 30 days
ROOT = Path("/cache")
BLOB_A = "sha256:" + "a" * 64
BLOB_B = "sha256:" + "b" * 64
BASE_ID = "sha256:" + "c" * 64


def venv(name: str, **changes: object) -> CachedVolume:
    fields: dict[str, object] = {
        "name": f"pydeploy-venv-{name}", "role": "venv", "created": HOURS_AGO, "size": 1000,
        "in_use": False, "complete": True, "claimed": HOURS_AGO, "last_used": HOURS_AGO,
    }  # fmt: skip
    fields.update(changes)
    return CachedVolume(**fields)  # type: ignore[arg-type]


def names(plan: Plan) -> set[str]:
    return {item.name for item in plan.remove}


def kept(plan: Plan) -> dict[str, str]:
    return {item.name: item.reason for item in plan.kept}


def default(inventory: Inventory, days: float = 30.0) -> Plan:
    return cachegc.plan_prune(inventory, Policy(older_than_days=days, now=NOW))


def everything(inventory: Inventory) -> Plan:
    return cachegc.plan_prune(inventory, Policy(everything=True, now=NOW))


def test_venv_volumes_go_when_unused_for_longer_than_the_limit() -> None:
    inventory = Inventory(
        ROOT,
        volumes=(
            venv("fresh"),
            venv("stale", last_used=OLD),
            venv("unrecorded-old", created=OLD, last_used=None),
            venv("unrecorded-new", last_used=None),
            venv("recorded-recently", created=OLD, last_used=HOURS_AGO),
        ),
    )
    assert names(default(inventory)) == {"pydeploy-venv-stale", "pydeploy-venv-unrecorded-old"}
    reasons = {item.name: item.reason for item in default(inventory).remove}
    assert reasons["pydeploy-venv-stale"] == "not used for 40 days"
    assert names(default(inventory, days=50)) == set()
    assert len(names(default(inventory, days=0))) == 5


def test_incomplete_venv_volumes_go_once_no_build_can_be_filling_them() -> None:
    inventory = Inventory(
        ROOT,
        volumes=(
            venv("broken", complete=False),
            venv("being-filled", complete=False, claimed=RECENT),
            venv("unknown", complete=None),
        ),
    )
    plan = default(inventory)
    assert names(plan) == {"pydeploy-venv-broken"}
    assert plan.remove[0].reason == "incomplete (no completion marker)"
    assert "a build may fill it" in kept(plan)["pydeploy-venv-being-filled"]
    assert "pydeploy-venv-unknown" not in kept(plan)  # marker unknown: treated as complete


def test_volumes_in_use_are_never_planned_for_removal() -> None:
    volumes = (
        venv("attached-broken", complete=False, in_use=True),
        venv("attached-stale", last_used=OLD, in_use=True),
        CachedVolume("pydeploy-cache", "cache", OLD, 5, in_use=True),
    )
    for plan in (
        default(Inventory(ROOT, volumes=volumes)),
        everything(Inventory(ROOT, volumes=volumes)),
    ):
        assert names(plan) == set()
        assert set(kept(plan).values()) == {"in use"}
        assert len(plan.kept) == 3


def test_default_keeps_shared_caches_and_removes_dead_apt_scratch() -> None:
    inventory = Inventory(
        ROOT,
        volumes=(
            CachedVolume("pydeploy-cache", "cache", OLD, 10, False),
            CachedVolume("pydeploy-python-1234", "python", OLD, 0, False),
            CachedVolume("pydeploy-apt-dead", "apt", HOURS_AGO, 10, False),
            CachedVolume("pydeploy-apt-starting", "apt", RECENT, 0, False),
        ),
        images=(CachedImage("pydeploy-builder:k1", "sha256:1", 300, False),),
    )
    assert names(default(inventory)) == {"pydeploy-apt-dead"}


def test_all_plans_every_cached_volume_image_and_host_file_not_in_use() -> None:
    inventory = Inventory(
        ROOT,
        volumes=(
            venv("fresh"),
            CachedVolume("pydeploy-cache", "cache", RECENT, 10, False),
            CachedVolume("pydeploy-python-1234", "python", OLD, 0, False),
        ),
        images=(
            CachedImage("pydeploy-builder:k1", "sha256:1", 300, False),
            CachedImage("pydeploy-builder:k2", "sha256:2", 400, True),
        ),
        files=(
            HostEntry(ROOT / "blobs/sha256" / BLOB_A[7:], "blob", 50, RECENT, digest=BLOB_A),
            HostEntry(ROOT / "blobs/index/x/k.json", "index", 5, RECENT, refs=frozenset({BLOB_A})),
            HostEntry(ROOT / "logs/build.log", "log", 7, RECENT),
            HostEntry(ROOT / "lock", "lock", 0, RECENT),
            HostEntry(ROOT / "tmp/pydeploy-old", "tmp", 9, HOURS_AGO, is_dir=True),
            HostEntry(ROOT / "tmp/pydeploy-live", "tmp", 9, RECENT, is_dir=True),
            HostEntry(ROOT / "blobs/sha256/.tmp-live", "partial", 9, RECENT),
        ),
    )
    plan = everything(inventory)
    assert names(plan) == {
        "pydeploy-venv-fresh", "pydeploy-cache", "pydeploy-python-1234", "pydeploy-builder:k1",
        *(str(ROOT / p) for p in (f"blobs/sha256/{BLOB_A[7:]}", "blobs/index/x/k.json",
                                  "logs/build.log", "tmp/pydeploy-old")),
    }  # fmt: skip
    assert kept(plan)["pydeploy-builder:k2"] == "in use"
    assert "a build may be writing it" in kept(plan)[str(ROOT / "tmp/pydeploy-live")]
    assert str(ROOT / "blobs/sha256/.tmp-live") in kept(plan)
    assert str(ROOT / "lock") not in kept(plan)  # never removed, not worth a line
    assert plan.size == 1000 + 10 + 0 + 300 + 50 + 5 + 7 + 9
    # The default plan touches none of those shared caches or fresh files.
    assert names(default(inventory)) == {str(ROOT / "tmp/pydeploy-old")}


def test_host_files_partials_tmp_logs_and_unreferenced_blobs() -> None:
    blob_c = "sha256:" + "d" * 64
    files = (
        HostEntry(ROOT / "sha/.tmp-old", "partial", 1, HOURS_AGO),
        HostEntry(ROOT / "sha/.tmp-new", "partial", 1, RECENT),
        HostEntry(ROOT / "logs/old.log", "log", 1, OLD),
        HostEntry(ROOT / "logs/new.log", "log", 1, HOURS_AGO),
        HostEntry(ROOT / "unchanged/old.json", "record", 1, OLD),
        HostEntry(ROOT / "unchanged/new.json", "record", 1, HOURS_AGO),
        HostEntry(ROOT / "sha/a", "blob", 1, OLD, digest=BLOB_A),  # referenced
        HostEntry(ROOT / "sha/b", "blob", 1, HOURS_AGO, digest=BLOB_B),  # orphan
        HostEntry(ROOT / "sha/d", "blob", 1, RECENT, digest=blob_c),  # orphan, maybe mid-build
        HostEntry(ROOT / "idx/k.json", "index", 1, HOURS_AGO, refs=frozenset({BLOB_A})),
        HostEntry(ROOT / "stray", "other", 1, OLD),
    )
    plan = default(Inventory(ROOT, files=files))
    old = ("sha/.tmp-old", "logs/old.log", "unchanged/old.json", "sha/b")
    assert names(plan) == {str(ROOT / p) for p in old}


def test_a_stale_index_entry_goes_and_frees_its_blobs_unless_its_base_is_present() -> None:
    files = (
        HostEntry(ROOT / "idx/app-check/k.json", "index", 1, OLD, refs=frozenset({BLOB_A}),
                  index_kind="app-check"),
        HostEntry(ROOT / "idx/docker-save/c.json", "index", 1, OLD,
                  refs=frozenset({BASE_ID, BLOB_B}), index_kind="docker-save"),
        HostEntry(ROOT / "sha/a", "blob", 1, OLD, digest=BLOB_A),
        HostEntry(ROOT / "sha/b", "blob", 1, OLD, digest=BLOB_B),
    )  # fmt: skip
    present = default(Inventory(ROOT, files=files, engine_images=frozenset({BASE_ID})))
    assert names(present) == {str(ROOT / "idx/app-check/k.json"), str(ROOT / "sha/a")}
    gone = default(Inventory(ROOT, files=files))
    assert names(gone) == {str(e.path) for e in files}


def test_inventory_of_a_real_cache_directory_and_removal(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / BLOB_A[7:]).write_bytes(b"kept")
    (blobs / BLOB_B[7:]).write_bytes(b"orphan")
    (blobs / ".tmp-abc").write_bytes(b"partial")
    index = tmp_path / "blobs" / "index" / "venv-layer"
    index.mkdir(parents=True)
    (index / "key.json").write_text(json.dumps({"layer": {"digest": BLOB_A}}))
    scratch = tmp_path / "tmp" / "pydeploy-x" / "venv"
    scratch.mkdir(parents=True)
    (scratch / "f").write_bytes(b"12345")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "build-failure.log").write_text("x")
    (tmp_path / "unchanged").mkdir()
    (tmp_path / "unchanged" / "key.json").write_text("{}")
    (tmp_path / "unchanged" / ".tmp-key.json.x").write_text("{")
    hours_ago = NOW - 2 * 3600
    for path in tmp_path.rglob("*"):
        os.utime(path, (hours_ago, hours_ago))

    inventory = cachegc.take_inventory(None, tmp_path, check_markers=True)
    assert not inventory.engine
    roles = {str(e.path.relative_to(tmp_path)): e.role for e in inventory.files}
    assert roles == {
        f"blobs/sha256/{BLOB_A[7:]}": "blob", f"blobs/sha256/{BLOB_B[7:]}": "blob",
        "blobs/sha256/.tmp-abc": "partial", "blobs/index/venv-layer/key.json": "index",
        "tmp/pydeploy-x": "tmp", "logs/build-failure.log": "log",
        "unchanged/key.json": "record", "unchanged/.tmp-key.json.x": "partial",
    }  # fmt: skip
    scratch_entry = next(e for e in inventory.files if e.role == "tmp")
    assert scratch_entry.is_dir
    assert scratch_entry.size == 5

    plan = cachegc.plan_prune(inventory, Policy(now=NOW))
    removed = {str(Path(i.name).relative_to(tmp_path)) for i in plan.remove}
    assert removed == {
        f"blobs/sha256/{BLOB_B[7:]}", "blobs/sha256/.tmp-abc", "tmp/pydeploy-x",
        "unchanged/.tmp-key.json.x",
    }  # fmt: skip
    outcome = cachegc.apply(None, tmp_path, plan)
    assert outcome.reclaimed == len(b"orphan") + len(b"partial") + 5 + len(b"{")
    assert sorted(p.name for p in blobs.iterdir()) == [BLOB_A[7:]]
    assert not (tmp_path / "tmp" / "pydeploy-x").exists()
    assert (tmp_path / "logs" / "build-failure.log").exists()

    everything_plan = cachegc.plan_prune(
        cachegc.take_inventory(None, tmp_path, check_markers=False),
        Policy(everything=True, now=NOW),
    )
    cachegc.apply(None, tmp_path, everything_plan)
    assert not tmp_path.exists()


def test_containers_of_dead_builds_go_first() -> None:
    inventory = Inventory(ROOT, volumes=(venv("stale", last_used=OLD),), orphans=("c1", "c2"))
    plan = default(inventory)
    assert [(i.kind, i.name) for i in plan.remove] == [
        ("container", "c1"), ("container", "c2"), ("volume", "pydeploy-venv-stale"),
    ]  # fmt: skip
    assert {i.reason for i in plan.remove[:2]} == {"its build is gone"}


def test_while_a_build_holds_the_host_cache_prune_leaves_it_alone(tmp_path: Path) -> None:
    files = (
        HostEntry(ROOT / "sha/.tmp-old", "partial", 1, OLD),
        HostEntry(ROOT / "sha/b", "blob", 1, OLD, digest=BLOB_B),
        HostEntry(ROOT / "idx/k.json", "index", 1, OLD, refs=frozenset()),
        HostEntry(ROOT / "lock", "lock", 0, RECENT),
    )
    for plan in (
        default(Inventory(ROOT, files=files, host_busy=True), days=0),
        everything(Inventory(ROOT, files=files, host_busy=True)),
    ):
        assert names(plan) == set()
        assert not plan.tidy_directories, "an empty directory may be a build's next write"
        assert set(kept(plan).values()) == {"a build is using the host cache"}
        assert str(ROOT / "lock") not in kept(plan)

    root = tmp_path / "cache"
    with cachegc.lease(root):
        with cachegc.exclusive(root) as alone:
            assert alone is False
        with cachegc.lease(root):  # builds share it (build --all)
            pass
    waiting, leased = threading.Event(), threading.Event()

    def build() -> None:
        with cachegc.lease(root, waiting.set):
            leased.set()

    with cachegc.exclusive(root) as alone:
        assert alone is True
        builder = threading.Thread(target=build)
        builder.start()
        assert waiting.wait(timeout=60), "a build starting during prune says it waits"
        assert not leased.is_set()
    builder.join(timeout=60)
    assert leased.is_set(), "and goes on once prune is done"
    (root / "blobs").mkdir()
    inventory = cachegc.take_inventory(None, root, check_markers=False)
    assert {e.path.name: e.role for e in inventory.files} == {"lock": "lock"}
    cachegc.apply(None, root, everything(inventory))
    assert (root / cachegc.LOCK_FILE).is_file()
    assert not (root / "blobs").exists()


def test_the_pruned_document_has_the_documented_shape() -> None:
    gone = cachegc.Item("volume", "venv volume", "pydeploy-venv-a", 1000, "--all")
    spared = cachegc.Item("image", "builder image", "pydeploy-builder:k", None, "in use")
    blob = cachegc.Item("file", "blob", "/cache/blobs/sha256/x", 24, "--all")
    policy = Policy(everything=True, older_than_days=7.5, now=NOW)
    pruned = cachegc.Pruned((gone, blob), (spared,), policy, ROOT, engine=True, dry_run=True)
    assert pruned.size == 1024
    document = pruned.to_json()
    assert list(document) == [
        "dry_run", "all", "older_than_days", "cache_dir", "engine", "items", "kept", "bytes",
    ]  # fmt: skip
    assert document == {
        "dry_run": True, "all": True, "older_than_days": 7.5, "cache_dir": "/cache",
        "engine": True, "items": [gone.to_json(), blob.to_json()],
        "kept": [spared.to_json()], "bytes": 1024,
    }  # fmt: skip


def test_describe_collapses_blobs_into_one_line_per_reason() -> None:
    items = [
        cachegc.Item("file", "blob", f"/b/{n}", 200_000, "not referenced by any cache index")
        for n in range(3)
    ] + [cachegc.Item("volume", "venv volume", "pydeploy-venv-x", None, "in use")]
    assert cachegc.describe(items) == [
        "venv volume pydeploy-venv-x (size unknown; in use)",
        "3 blobs (0.6 MB; not referenced by any cache index)",
    ]


class InventoryEngine:
    """What take_inventory asks an engine: one venv volume used (per the record inside
    it) an hour ago, held only by a dead build's container."""

    def __init__(self, used: bytes | None) -> None:
        self.used = used

    def orphans(self) -> list[str]:
        return ["dead-build-container"]

    def in_use(self, ignore: set[str] | None = None) -> tuple[set[str], set[str]]:
        held = set() if "dead-build-container" in (ignore or set()) else {"pydeploy-venv-a"}
        return held, set()

    def df(self) -> DiskUsage:
        return DiskUsage({"pydeploy-venv-a": 1000}, {"sha256:base": 5})

    def list_images(self, _repository: str) -> list[ImageInfo]:
        return []

    def list_volumes(self, _prefix: str) -> list[VolumeInfo]:
        labels = {"pydeploy.venv": "1", LABEL_VENV_KEY: "k"}
        return [VolumeInfo("pydeploy-venv-a", labels, OLD)]

    def read_volume_files(self, volume: str, paths: list[str], _image: str) -> list[bytes | None]:
        assert (volume, paths) == ("pydeploy-venv-a", [MARKER, USED])
        return [json.dumps({"key": "k"}).encode(), self.used]


def test_last_use_comes_from_the_volume_and_dead_builds_hold_nothing(tmp_path: Path) -> None:
    recent = json.dumps({"time": NOW - 3600}).encode()
    inventory = cachegc.take_inventory(
        cast(Engine, InventoryEngine(recent)), tmp_path, check_markers=True
    )
    (volume,) = inventory.volumes
    assert (volume.in_use, volume.complete, volume.last_used) == (False, True, NOW - 3600)
    assert inventory.orphans == ("dead-build-container",)
    # Created 40 days ago, used an hour ago by some build on some host: it stays.
    assert names(default(inventory)) == {"dead-build-container"}
    # No record (a volume of an older pydeploy): judged by its creation time.
    unrecorded = cachegc.take_inventory(
        cast(Engine, InventoryEngine(None)), tmp_path, check_markers=True
    )
    assert names(default(unrecorded)) == {"dead-build-container", "pydeploy-venv-a"}


def test_engine_indexes_keep_no_host_blob(tmp_path: Path) -> None:
    """image-layers names an engine image's diff IDs: a blob with such a digest is not
    kept by it (only the host-cache indexes that use blobs keep them)."""
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / BLOB_A[7:]).write_bytes(b"a layer the engine also has")
    index = tmp_path / "blobs" / "index" / "image-layers"
    index.mkdir(parents=True)
    (index / f"{BLOB_B[7:]}.json").write_text(json.dumps([BLOB_A]))
    hours_ago = NOW - 2 * 3600
    for path in tmp_path.rglob("*"):
        os.utime(path, (hours_ago, hours_ago))
    plan = cachegc.plan_prune(
        cachegc.take_inventory(None, tmp_path, check_markers=True), Policy(now=NOW)
    )
    removed = {str(Path(i.name).relative_to(tmp_path)) for i in plan.remove}
    assert removed == {f"blobs/sha256/{BLOB_A[7:]}"}


def test_host_venvs_age_out_and_interrupted_installs_go(tmp_path: Path) -> None:
    """`venvs/` of builds without an engine: a venv unused for the policy's days goes (its
    marker is touched on each use), one used lately stays, and the work directory of an
    install a killed build left goes once it is an hour old."""
    venvs = tmp_path / "venvs"
    old, fresh, abandoned = venvs / "a", venvs / "b", venvs / ".tmp-999999-abcd"
    for path in (old, fresh, abandoned):
        (path / "lib").mkdir(parents=True)
        (path / "lib" / "mod.py").write_text("x = 1\n")
    ages = {old: NOW - 400 * 86400, fresh: NOW - 3600, abandoned: NOW - 7200}
    for path, when in ages.items():
        for each in (path / "lib" / "mod.py", path / "lib", path):
            os.utime(each, (when, when))
    inventory = cachegc.take_inventory(None, tmp_path, check_markers=False)
    roles = {e.path.name: e.role for e in inventory.files}
    assert roles == {"a": "venv", "b": "venv", ".tmp-999999-abcd": "tmp"}
    plan = cachegc.plan_prune(inventory, Policy(now=NOW))
    assert {Path(i.name).name: i.category for i in plan.remove} == {
        "a": "host venv", ".tmp-999999-abcd": "tmp",
    }  # fmt: skip
