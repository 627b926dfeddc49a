"""pydeploy.builder.sharedlibs: which containers the library check runs (on the fake
engine), its cache, and the choice it makes: packages added, `runtime-packages` winning,
auto off, no package known."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import pytest
from tests.unit.builder.conftest import MakePlan
from tests.unit.builder.fake_engine import (
    BASE,
    BASE_ID,
    PYTHON,
    FakeContainer,
    FakeEngine,
    Reply,
    result,
)

from pydeploy.builder import sharedlibs, stage
from pydeploy.builder.sharedlibs import LibraryCheck, MissingLibrary, RuntimePackages
from pydeploy.engine.types import ImageFacts
from pydeploy.errors import BuildError
from pydeploy.oci.blobs import BlobStore
from pydeploy.plan.planner import VENV, BuildPlan

EXT = "lib/python3.12/site-packages/psycopg2/_psycopg.cpython-312-x86_64-linux-gnu.so"
FULL = "pydeploy-builder:0123456789abcdef"
PY = stage.PythonInfo(str(PYTHON["executable"]), "3.12.1", "lib/python3.12/site-packages")


def deps(builder: stage.BuilderImage) -> stage.Dependencies:
    return stage.Dependencies("k" * 64, "pydeploy-venv-kkkk", (), "project", True, builder)


def full_builder() -> stage.BuilderImage:
    return stage.BuilderImage(FULL, "sha256:" + "f" * 64, PY, "0123456789abcdef",
                              packages=("gcc", "libpq-dev"))  # fmt: skip


def light_builder() -> stage.BuilderImage:
    return stage.BuilderImage(BASE, BASE_ID, PY, "0123456789abcdef", light=True)


def scans(*missing: tuple[str, list[str]], files: int = 3) -> Reply:
    found = [{"soname": name, "needed_by": paths} for name, paths in missing]
    return Reply([result({"files": files, "missing": found, "seconds": 0.004})])


def knows(**packages: str | None) -> Reply:
    libraries = {
        name.replace("_", "."): {"path": f"/usr/lib/x/{name}" if pkg else None, "package": pkg}
        for name, pkg in packages.items()
    }
    return Reply([result({"libraries": libraries, "seconds": 0.001})])


def system_tar(tmp_path: Path) -> Path:
    path = tmp_path / "system.tar"
    with tarfile.open(path, "w") as tar:
        data = b"\x7fELF"
        info = tarfile.TarInfo("usr/lib/x86_64-linux-gnu/libpq.so.5")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def run_check(
    engine: FakeEngine, plan: BuildPlan, tmp_path: Path, builder: stage.BuilderImage,
    layer_tar: Path | None = None,
) -> LibraryCheck:  # fmt: skip
    made: list[bool] = []

    def tar() -> Path | None:
        made.append(True)
        return layer_tar

    inputs = sharedlibs.ScanInputs(BASE, BASE_ID, ("PATH=/usr/bin",), tar)
    run = sharedlibs.LibraryRun(engine, plan, deps(builder), lambda *_: None)
    check = sharedlibs.check_libraries(run, BlobStore(tmp_path / "blobs"), inputs)
    assert made == ([] if check.cached else [True])
    return check


def test_the_scan_runs_in_the_base_with_the_venv_read_only_and_no_network(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    engine.handlers["scan"] = lambda _c: scans()
    check = run_check(engine, make('runtime-packages = ["libpq5"]\n'), tmp_path, full_builder(),
                      system_tar(tmp_path))  # fmt: skip
    assert check == LibraryCheck(3, (), 0.004)
    [scan] = engine.started("scan")
    assert scan.image == BASE
    assert scan.network == "none"
    [mount] = scan.mounts
    assert (mount.target, mount.source, mount.read_only) == (VENV, "pydeploy-venv-kkkk", True)
    assert scan.job == {"venv": VENV, "library_path": ""}
    assert scan.argv[:2] == [PYTHON["executable"], sharedlibs.SCRIPT]
    # The user's system layer is unpacked into it: the runtime image's filesystem.
    assert "/usr/lib/x86_64-linux-gnu/libpq.so.5" in scan.files
    assert not engine.started("which")


def test_a_missing_library_is_looked_up_in_the_builder_and_the_answer_cached(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    engine.handlers["scan"] = lambda _c: scans(("libpq.so.5", [EXT]))
    engine.handlers["which"] = lambda _c: knows(libpq_so_5="libpq5")
    engine.images[FULL] = ImageFacts(full_builder().image_id)
    plan = make()
    check = run_check(engine, plan, tmp_path, full_builder())
    assert check.missing == (
        MissingLibrary("libpq.so.5", (EXT,), "libpq5", "/usr/lib/x/libpq_so_5"),
    )
    [which] = engine.started("which")
    assert which.image == FULL
    assert which.network == "none"
    assert which.job == {"sonames": ["libpq.so.5"]}
    before = len(engine.containers)
    again = run_check(engine, plan, tmp_path, full_builder())
    assert again.cached
    assert again.missing == check.missing
    assert len(engine.containers) == before, "a cached answer starts no container"


def test_the_cache_key_follows_the_runtime_packages_and_the_library_path(
    make: MakePlan,
) -> None:
    plain, with_pq = make(), make('runtime-packages = ["libpq5"]\n')
    venv = deps(full_builder())
    keys = {
        sharedlibs.check_key(plain, venv, BASE_ID, ""),
        sharedlibs.check_key(with_pq, venv, BASE_ID, ""),
        sharedlibs.check_key(plain, venv, BASE_ID, "/opt/lib"),
        sharedlibs.check_key(plain, venv, "sha256:" + "c" * 64, ""),
    }
    assert len(keys) == 4
    env = make('env = { LD_LIBRARY_PATH = "/opt/own" }\n')
    assert stage.library_path(env, ["LD_LIBRARY_PATH=/base"]) == "/opt/own"
    assert stage.library_path(plain, ["A=1", "LD_LIBRARY_PATH=/base"]) == "/base"
    assert stage.library_path(plain, ["A=1"]) == ""


def test_after_a_light_install_the_full_builder_answers(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    engine.handlers["scan"] = lambda _c: scans(("libpq.so.5", [EXT]))
    engine.handlers["which"] = lambda _c: knows(libpq_so_5="libpq5")
    check = run_check(engine, make('build-packages = ["libpq-dev"]\n'), tmp_path, light_builder())
    [which] = engine.started("which")
    assert which.image.startswith("pydeploy-builder:")
    assert engine.started("apt-install"), "the full builder was built to answer"
    assert check.missing[0].package == "libpq5"


def test_without_build_packages_no_builder_is_asked(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    engine.handlers["scan"] = lambda _c: scans(("libGL.so.1", [EXT]))
    plan = make("build-packages = []\n")
    check = run_check(engine, plan, tmp_path, light_builder())
    assert not engine.started("which")
    with pytest.raises(BuildError) as caught:
        sharedlibs.settle(plan, check)
    assert "libGL.so.1" in caught.value.message
    assert "`tool.pydeploy.build-packages`" in caught.value.message


def test_a_failing_scan_is_a_build_error_with_its_output(
    engine: FakeEngine, make: MakePlan, tmp_path: Path
) -> None:
    def broken(_box: FakeContainer) -> Reply:
        return Reply(["Traceback...", "OSError: boom"], exit_code=1)

    engine.handlers["scan"] = broken
    with pytest.raises(BuildError) as caught:
        run_check(engine, make(), tmp_path, full_builder())
    assert "OSError: boom" in caught.value.message


# --- the choice -------------------------------------------------------------------------------


def missing(soname: str, package: str | None, *paths: str) -> MissingLibrary:
    return MissingLibrary(
        soname, paths or (EXT,), package, f"/usr/lib/{soname}" if package else None
    )


def test_packages_are_added_sorted_and_once(make: MakePlan) -> None:
    plan = make('runtime-packages = ["tzdata"]\n')
    ldap = "libldap-2.5-0"
    found = (missing("libpq.so.5", "libpq5"), missing("libldap-2.5.so.0", ldap),
             missing("liblber-2.5.so.0", ldap))  # fmt: skip
    check = LibraryCheck(5, found)
    settled = sharedlibs.settle(plan, check)
    assert settled.configured == ("tzdata",)
    assert settled.automatic == ("libldap-2.5-0", "libpq5")
    assert settled.packages == ("libldap-2.5-0", "libpq5", "tzdata")
    assert plan.runtime_packages == ("tzdata",), "the plan keeps the user's list"


def test_nothing_missing_keeps_the_users_packages(make: MakePlan) -> None:
    plan = make('runtime-packages = ["libpq5"]\n')
    settled = sharedlibs.settle(plan, LibraryCheck(3, ()))
    assert settled == RuntimePackages(("libpq5",))
    assert settled.packages == ("libpq5",)
    assert sharedlibs.describe(LibraryCheck(3, (), 0.0123), settled) == (
        "3 ELF files in 12 ms: every library found"
    )
    assert (
        sharedlibs.describe(LibraryCheck(0, (), cached=True), settled)
        == "cached: no compiled files"
    )


def test_the_one_line_names_package_file_and_soname(make: MakePlan) -> None:
    check = LibraryCheck(3, (missing("libpq.so.5", "libpq5"),), 0.004)
    line = sharedlibs.describe(check, sharedlibs.settle(make(), check))
    assert line == (
        "added runtime packages libpq5 (for psycopg2/_psycopg.cpython-312-x86_64-linux-gnu.so "
        "needs libpq.so.5; 3 ELF files in 4 ms)"
    )


def test_auto_off_fails_naming_the_library_the_file_and_the_key(make: MakePlan) -> None:
    plan = make("auto-runtime-packages = false\n")
    assert plan.auto_runtime_packages is False
    check = LibraryCheck(3, (missing("libpq.so.5", "libpq5", EXT, "lib/other.so"),))
    with pytest.raises(BuildError) as caught:
        sharedlibs.settle(plan, check)
    text = caught.value.message
    assert f"libpq.so.5, which {EXT} needs (and 1 more file)" in text
    assert "`tool.pydeploy.runtime-packages`" in text
    assert '"libpq5"' in text
    assert "auto-runtime-packages" in text


def test_a_library_the_builder_has_without_a_package_fails(make: MakePlan) -> None:
    lonely = dataclasses.replace(
        missing("libfoo.so.1", None), builder_path="/usr/local/lib/libfoo.so.1"
    )
    with pytest.raises(BuildError) as caught:
        sharedlibs.settle(make(), LibraryCheck(1, (lonely,)))
    assert "/usr/local/lib/libfoo.so.1, which no Debian package owns" in caught.value.message
    assert "`tool.pydeploy.runtime-packages`" in caught.value.message


def test_the_check_document_round_trips() -> None:
    check = LibraryCheck(3, (missing("libpq.so.5", "libpq5"),), 0.5)
    again = LibraryCheck.from_doc(check.to_doc())
    assert again == dataclasses.replace(check, cached=True)
    assert LibraryCheck.from_doc({"files": 1}) is None
    assert LibraryCheck.from_doc(None) is None


@pytest.mark.parametrize(
    ("tool", "library_path", "builder", "used"),
    [
        ("", "", light_builder(), True),
        ('runtime-packages = ["libpq5"]\n', "", light_builder(), False),  # a system layer
        ("", "/opt/other", light_builder(), False),  # scanned with another LD_LIBRARY_PATH
        ("", "", full_builder(), False),  # installed with compilers
    ],
    ids=["the-base-itself", "runtime-packages", "library-path", "full-builder"],
)
def test_the_install_s_own_scan_saves_the_scan_container_only_when_it_was_this_one(
    engine: FakeEngine, make: MakePlan, tmp_path: Path, tool: str, library_path: str,
    builder: stage.BuilderImage, used: bool,
) -> None:  # fmt: skip
    engine.handlers["scan"] = lambda _c: scans(files=9)
    at_install = {"files": 3, "missing": [], "seconds": 0.002, "library_path": library_path}
    venv = dataclasses.replace(deps(builder), elf_scan=at_install)
    inputs = sharedlibs.ScanInputs(BASE, BASE_ID, ("PATH=/usr/bin",), lambda: None)
    run = sharedlibs.LibraryRun(engine, make(tool), venv, lambda *_: None)
    check = sharedlibs.check_libraries(run, BlobStore(tmp_path / "blobs"), inputs)
    assert check.files == (3 if used else 9)
    assert len(engine.started("scan")) == (0 if used else 1)
