"""The no-change record (pydeploy.fastpath): what a recorded block read, and whether the
host still reads the same; the engine's quick answers (engine/quick.py) over a real unix
socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydeploy import fastpath
from pydeploy.cli import unchanged
from pydeploy.engine import quick

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}  # fmt: skip


def _read_project(root: Path) -> None:
    """What a build does to a project, in miniature: list it, read its files, ask git."""
    for path in sorted(root.iterdir()):  # os.listdir in Python 3.11, os.scandir later
        if path.is_file():
            path.read_bytes()
    fastpath.run_git(root, "rev-parse", "HEAD")


def _record(root: Path) -> fastpath.Record:
    # Changed a while before the build, as a real project's files are (no racy stats).
    for path in root.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    with fastpath.recording() as reads:
        _read_project(root)
    record = fastpath.make_record(
        reads, project_roots=[root], ignored=[], images={"a:1": "sha256:1"}, result={"ok": 1},
        warnings=["a warning the answer repeats"],
    )  # fmt: skip
    assert record is not None
    return record


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "main.py").write_text("app = 1\n")
    (root / "pyproject.toml").write_text('[project]\nname = "p"\n')
    return root


def test_an_untouched_project_verifies(project: Path) -> None:
    record = _record(project)
    assert str(project / "main.py") in record.files
    assert str(project) in record.dirs
    assert fastpath.verify(record)


def test_a_record_survives_its_file(project: Path, tmp_path: Path) -> None:
    record = _record(project)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record.to_doc()))
    loaded = fastpath.load(path)
    assert loaded == record
    assert loaded is not None
    assert loaded.warnings == ["a warning the answer repeats"]
    assert fastpath.verify(loaded)


@pytest.mark.parametrize(
    "change",
    ["edit", "same size edit", "chmod", "new file", "removed file", "new dir above"],
)
def test_a_changed_project_does_not_verify(project: Path, change: str) -> None:
    record = _record(project)
    main = project / "main.py"
    if change == "edit":
        main.write_text("app = 22\n")
    elif change == "same size edit":
        main.write_text("app = 2\n")
        os.utime(main, (1_000_000_000, 1_000_000_000))  # even with the old mtime
    elif change == "chmod":
        main.chmod(0o755)
    elif change == "new file":
        (project / "extra.py").write_text("")
    elif change == "removed file":
        main.unlink()
    else:  # the planner looks for a workspace's pyproject.toml above the project
        (project.parent / "pyproject.toml").write_text("")
    assert not fastpath.verify(record)


def test_a_new_git_head_does_not_verify(project: Path) -> None:
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run(["git", "-C", str(project), "commit", "-q", "--allow-empty", "-m", "1"],
                   check=True, env=env)  # fmt: skip
    record = _record(project)
    assert fastpath.verify(record)
    subprocess.run(["git", "-C", str(project), "commit", "-q", "--allow-empty", "-m", "2"],
                   check=True, env=env)  # fmt: skip
    assert not fastpath.verify(record)


def test_a_file_changed_during_the_build_gives_no_record(project: Path) -> None:
    with fastpath.recording() as reads:
        _read_project(project)
        (project / "main.py").write_text("app = 3\n")  # after the build read it
    record = fastpath.make_record(reads, project_roots=[project], ignored=[], images={}, result={})
    assert record is None


def test_ignored_trees_and_writes_are_not_inputs(project: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob").write_text("x")
    with fastpath.recording() as reads:
        (cache / "blob").read_text()
        (project / "out.txt").write_text("written, not read")
    assert str(cache / "blob") in reads.opened
    assert str(project / "out.txt") not in reads.opened
    record = fastpath.make_record(
        reads, project_roots=[project], ignored=[cache], images={}, result={}
    )
    assert record is not None
    assert record.files == {}


def test_removing_a_scratch_tree_reads_nothing_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch, cwd = tmp_path / "scratch", tmp_path / "cwd"
    (scratch / "venv" / "bin").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with fastpath.recording() as reads:
        shutil.rmtree(scratch)  # opens `venv` by dir_fd: the event shows a relative name
    assert not [p for p in [*reads.opened, *reads.listed] if p.startswith(str(cwd))]


def test_the_key_follows_arguments_directory_and_environment() -> None:
    base = fastpath.key({"tags": ["a:1"]}, {"HOME": "/root", "PWD": "/x"}, "/work")
    assert base == fastpath.key({"tags": ["a:1"]}, {"HOME": "/root", "PWD": "/y"}, "/work")
    assert base != fastpath.key({"tags": ["a:2"]}, {"HOME": "/root"}, "/work")
    assert base != fastpath.key({"tags": ["a:1"]}, {"HOME": "/root", "FOO": "1"}, "/work")
    assert base != fastpath.key({"tags": ["a:1"]}, {"HOME": "/root"}, "/elsewhere")


@pytest.fixture
def engine_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A unix socket answering as an engine holding one image, `known:1`."""
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    asked: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                method, target = conn.recv(4096).split(b" ")[:2]
                asked.append(
                    target.decode() if method == b"GET" else f"{method.decode()} {target.decode()}"
                )
                if method == b"POST" and target.startswith(b"/images/sha256:abc/tag?"):
                    conn.sendall(b"HTTP/1.0 201 Created\r\n\r\n")
                elif target == b"/images/known:1/json":
                    body = json.dumps({"Id": "sha256:abc"}).encode()
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + body)
                else:
                    conn.sendall(b'HTTP/1.0 404 Not Found\r\n\r\n{"message": "no"}')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    yield asked
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
    server.close()
    thread.join(5)
    assert not thread.is_alive()


def test_the_engine_names_its_images(engine_socket: list[str]) -> None:
    assert quick.image_ids(["known:1", "127.0.0.1:5000/team/api:2"]) == {
        "known:1": "sha256:abc",
        "127.0.0.1:5000/team/api:2": None,
    }
    assert engine_socket == ["/images/known:1/json", "/images/127.0.0.1:5000/team/api:2/json"]


def test_only_a_unix_socket_is_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    assert quick.image_ids(["a:1"]) is None
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'absent.sock'}")
    assert quick.image_ids(["a:1"]) is None


def test_the_engine_tags_an_image(engine_socket: list[str]) -> None:
    assert quick.tag("sha256:abc", "127.0.0.1:5000/team/api:sha-1")
    assert not quick.tag("sha256:other", "api:1")  # the engine's 404: no fast answer
    assert engine_socket == [
        "POST /images/sha256:abc/tag?repo=127.0.0.1%3A5000%2Fteam%2Fapi&tag=sha-1",
        "POST /images/sha256:other/tag?repo=api&tag=1",
    ]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (("api:1", "reg:5000/team/api:sha-2"), ("api:1", "reg:5000/team/api:sha-2")),
        (("api:1", "api:1"), ("api:1",)),
        ((), None),  # the project's own tags: read from its files, so recorded
        (("1.2",), None),  # a bare tag takes the project's name: part of the key
        (("api:1", "latest"), None),
        (("reg:5000/api",), None),  # no tag: the build's error, not a fast answer
        (("api:1@sha256:" + "0" * 64,), None),
    ],
)
def test_only_full_references_leave_the_key(
    tags: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    assert unchanged.full_references(tags) == expected
