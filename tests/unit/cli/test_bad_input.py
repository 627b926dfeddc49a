"""Bad input gets a paragraph, never a traceback: each input class that once crashed
(or failed only at `docker load`, or gave an image that cannot start) now exits 2 from
`pydeploy plan`/`check`/`build` with one paragraph that names the file or key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pydeploy.cli.main import cli
from pydeploy.plan import serverargs

MINIMAL = '[project]\nname = "demo"\nversion = "1.0"\n'
TABLE = '[tool.pydeploy]\napp = "main:app"\n'
VALID = MINIMAL + TABLE
# The default port of a Docker engine that is not there: a test that gets past
# validation would fail with exit 3 (engine), not 2.
NO_ENGINE = {"DOCKER_HOST": "tcp://127.0.0.1:9"}


def run(
    tmp_path: Path,
    pyproject: str | bytes,
    *args: str,
    files: dict[str, bytes] | None = None,
    command: str = "plan",
) -> tuple[int, str]:
    data = pyproject.encode() if isinstance(pyproject, str) else pyproject
    (tmp_path / "pyproject.toml").write_bytes(data)
    for name, content in (files or {}).items():
        (tmp_path / name).write_bytes(content)
    result = CliRunner().invoke(cli, [command, str(tmp_path), *args], env=NO_ENGINE)
    # Only SystemExit (the CLI's own exit) is allowed out of the command.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    return result.exit_code, result.output


def assert_paragraph(code: int, out: str, *fragments: str) -> None:
    assert code == 2, out
    assert "Traceback" not in out
    assert out.startswith("pydeploy: config error: ")
    assert out.strip().count("\n") == 0, "one paragraph, one line"
    assert len(out) < 2000, "a long value is cut short, not printed whole"
    for fragment in fragments:
        assert fragment in out


CASES = [
    # (id, pyproject, side files, fragments the message must hold)
    ("project-string", 'project = "x"\n' + TABLE, {}, ["`project` must be a table"]),
    ("tool-string", 'tool = "x"\n' + MINIMAL, {}, ["`tool` must be a table"]),
    ("binary-pyproject", b"\x89PNG\r\n\x1a\n\x00\xff", {}, ["pyproject.toml is not UTF-8"]),
    ("utf16-pyproject", VALID.encode("utf-16"), {}, ["pyproject.toml is not UTF-8", "UTF-16"]),
    (
        "deep-nesting",
        VALID + "x = " + "[" * 3000 + "]" * 3000 + "\n",
        {},
        ["pyproject.toml nests arrays or inline tables too deeply"],
    ),
    (
        "requires-python-int",
        MINIMAL + "requires-python = 310\n" + TABLE,
        {},
        ["`project.requires-python` must be a string", "(given: 310)"],
    ),
    (
        "urls-list",
        MINIMAL + "urls = [{a=1}]\n" + TABLE,
        {},
        ["`project.urls` must be a table of strings"],
    ),
    (
        "binary-python-version",
        VALID,
        {".python-version": b"\xff\xfe\x003\x00"},
        [".python-version is not UTF-8 text"],
    ),
    ("binary-uv-lock", VALID, {"uv.lock": b"\x00\x9f\x92\x96"}, ["uv.lock is not UTF-8 text"]),
    (
        "uv-lock-wrong-shape",
        VALID,
        {"uv.lock": b"[[package]]\nname = 1\n"},
        ["uv.lock: [[package]] entry 1: `name` must be a string"],
    ),
    (
        "pylock-not-a-list",
        VALID,
        {"pylock.toml": b"packages = 3\n"},
        ["pylock.toml: `packages` must be a list"],
    ),
    (
        "pylock-directory-string",
        VALID,
        {"pylock.toml": b'[[packages]]\nname = "a"\ndirectory = "x"\n'},
        ["pylock.toml: [[packages]] entry 1: `directory` must be a table"],
    ),
    (
        "pylock-bad-toml",
        VALID,
        {"pylock.toml": b"[[packages]\n"},
        ["pylock.toml is not valid TOML at line 1"],
    ),
    (
        "unknown-key-int",
        VALID + "int = 1\n",
        {},
        ["`tool.pydeploy.int` is not a known key; did you mean `index`?"],
    ),
    ("unknown-key-bracket", VALID + '"a[b" = 1\n', {}, ["`tool.pydeploy.a[b` is not a known key"]),
    (
        "unknown-nested-key-int",
        VALID + "[tool.pydeploy.server]\nint = 1\n",
        {},
        ["`tool.pydeploy.server.int` is not a known key"],
    ),
    ("tool-uv-string", VALID + '[tool]\nuv = "x"\n', {}, ["`tool.uv` must be a table"]),
    (
        "exclude-bang",
        VALID + 'exclude = ["!"]\n',
        {},
        ["`tool.pydeploy.exclude` entry '!' is not a gitignore-style pattern"],
    ),
    (
        "tag-with-space",
        VALID + 'tags = ["Bad Repo:1"]\n',
        {},
        ["`tool.pydeploy.tags` entry 'Bad Repo:1'", "not lowercase"],
    ),
    (
        "tag-path-traversal",
        VALID + 'tags = ["../../x:1"]\n',
        {},
        ["`tool.pydeploy.tags` entry '../../x:1'", "is not a host[:port]"],
    ),
    (
        "name-2mb",
        VALID + 'name = "' + "a" * 2_000_000 + '"\n',
        {},
        ["`tool.pydeploy.name` is not an image name: it is 2000000 characters long"],
    ),
    (
        "base-image-uppercase",
        VALID + 'base-image = "Python:3.12-slim"\n',
        {},
        ["`tool.pydeploy.base-image` is not an image reference"],
    ),
    (
        "name-uppercase",
        VALID + 'name = "Bad Repo"\n',
        {},
        ["`tool.pydeploy.name` is not an image name"],
    ),
    (
        "env-nul",
        VALID + 'env = {GREETING = "a\\u0000b"}\n',
        {},
        ["`tool.pydeploy.env`", "`GREETING` holds a NUL character"],
    ),
    (
        "extra-args-bind",
        VALID + '[tool.pydeploy.server]\nextra-args = ["--bind", "0.0.0.0:9"]\n',
        {},
        ["`tool.pydeploy.server.extra-args`", "`--bind` is set by pydeploy"],
    ),
    (
        "extra-args-joined",
        VALID + '[tool.pydeploy.server]\nextra-args = ["--timeout 60"]\n',
        {},
        ['give one word per item: ["--timeout", "60"]'],
    ),
    (
        "unicode-only-name",
        '[project]\nname = "日本"\nversion = "1.0"\n' + TABLE,
        {},
        ["`project.name` = '日本'", "`tool.pydeploy.name"],
    ),
]


@pytest.mark.parametrize(
    ("pyproject", "files", "fragments"),
    [pytest.param(p, f, e, id=i) for i, p, f, e in CASES],
)
def test_bad_input_is_one_paragraph_with_exit_2(
    tmp_path: Path, pyproject: str | bytes, files: dict[str, bytes], fragments: list[str]
) -> None:
    code, out = run(tmp_path, pyproject, files=files)
    assert_paragraph(code, out, *fragments)


@pytest.mark.parametrize(
    "args",
    [
        ["--tag", "Bad Repo:1"],
        ["--tag", "../../x:1"],
        ["--tag", "a" * 2_000_000 + ":1"],
        ["--registry", "Bad Org/"],
        ["--registry", "ghcr.io/" + "a" * 300],
        ["--base", "Python:3.12"],
    ],
    ids=["tag-space", "tag-traversal", "tag-2mb", "registry-space", "registry-long", "base"],
)
def test_bad_tags_fail_before_any_engine_work(tmp_path: Path, args: list[str]) -> None:
    """They once failed only at `docker load`, with exit 3; NO_ENGINE would give 3 too."""
    (tmp_path / "main.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    code, out = run(tmp_path, VALID, *args, command="build")
    assert_paragraph(code, out, f"{args[0]}: ")


def test_bad_lock_fails_the_build_before_any_engine_work(tmp_path: Path) -> None:
    code, out = run(tmp_path, VALID, files={"uv.lock": b"\xff\xfe"}, command="build")
    assert_paragraph(code, out, "uv.lock is not UTF-8 text")


def test_bad_input_is_caught_by_check_too(tmp_path: Path) -> None:
    code, out = run(tmp_path, VALID + 'env = {A = "\\u0000"}\n', command="check")
    assert_paragraph(code, out, "`A` holds a NUL character")


def test_plan_shows_an_app_that_static_detection_cannot_see(tmp_path: Path) -> None:
    """A valid app named in the config, with nothing the source scan recognises, used to
    crash `plan` with the launcher's LaunchError."""
    (tmp_path / "main.py").write_text("from factory import make\napp = make()\n")
    code, out = run(tmp_path, VALID)
    assert code == 0, out
    assert "main:app [auto] (tool.pydeploy.app)" in out
    assert "server            auto" in out


def test_accented_project_name_becomes_an_ascii_image_name(tmp_path: Path) -> None:
    """`café` once became `caf`, and `日本` silently `app`."""
    code, out = run(tmp_path, '[project]\nname = "Café_Crème"\nversion = "1.0"\n' + TABLE)
    assert code == 0, out
    assert "tags              cafe_creme:1.0" in out


def test_version_that_is_no_tag_names_project_version(tmp_path: Path) -> None:
    code, out = run(tmp_path, '[project]\nname = "demo"\nversion = "1.0+local"\n' + TABLE)
    assert_paragraph(code, out, "`project.version` in", "'1.0+local'")


@pytest.mark.parametrize(
    ("server", "args", "problem"),
    [
        ("auto", ["--workers", "4"], "`--workers` is set by pydeploy"),
        ("gunicorn", ["-w4"], "`-w` is set by pydeploy"),
        ("gunicorn", ["-b=0.0.0.0:1"], "`-b` is set by pydeploy"),
        ("gunicorn", ["--daemon"], "`--daemon` makes gunicorn exit or leave the foreground"),
        ("gunicorn", ["--check-config"], "`--check-config` makes gunicorn exit"),
        ("uvicorn", ["--port", "1"], "`--port` is set by pydeploy"),
        ("uvicorn", ["--version"], "`--version` makes uvicorn exit"),
        ("gunicorn", ["--preload", "other:app"], "would take it as a second app"),
        ("gunicorn", ["--timeout"], "the last item `--timeout` needs a value"),
        ("uvicorn", ["--log-level"], "the last item `--log-level` needs a value"),
        ("gunicorn", [""], "item 1 ('') is empty"),
        ("gunicorn", ["--name", "a\x00b"], "holds a NUL character"),
        ("gunicorn", ["--", "x"], "ends the options"),
        ("gunicorn", ["--log-level 'debug"], 'one word per item: ["--log-level", "\'debug"]'),
    ],
)
def test_extra_args_that_cannot_start_a_server_are_refused(
    server: str, args: list[str], problem: str
) -> None:
    assert problem in (serverargs.problem(server, args) or "")


@pytest.mark.parametrize(
    ("server", "args"),
    [
        ("auto", ["--preload"]),
        ("gunicorn", ["--log-level", "debug", "--timeout=60", "-t", "5"]),
        ("gunicorn-uvicorn", ["--access-logformat", "%(h)s %(r)s"]),
        ("gunicorn", ["--some-future-option", "value", "--another-future-flag"]),
        ("uvicorn", ["--log-level", "debug", "--no-server-header", "--limit-concurrency", "9"]),
        ("gunicorn", ["--forwarded-allow-ips", "-"]),
    ],
)
def test_extra_args_that_can_work_are_kept(server: str, args: list[str]) -> None:
    assert serverargs.problem(server, args) is None
