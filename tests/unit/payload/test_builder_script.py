"""The builder script's pure helpers, importable on the host: which server packages a
requirement set still lacks, requirement includes, editable lines, how an app object's
interface is recognised, and the lifeline (secrets on stdin, then its end)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import cast

import pytest
from packaging.utils import canonicalize_name

from pydeploy import payload
from pydeploy.builder.stage import skip_lists
from pydeploy.payload import builder_script
from pydeploy.payload.builder_script import InstallJob


def test_server_packages_are_added_only_when_not_named() -> None:
    lines = [
        "# comment",
        "Gunicorn==23.0.0",
        "uvicorn[standard]>=0.30 ; python_version >= '3.10'",
        "-r other.txt",
        "./vendor/uvicorn-worker",
        "flask @ https://example.invalid/flask.whl",
        "",
    ]
    named = builder_script.requirement_names(lines)
    assert set(named) == {"gunicorn", "uvicorn", "flask"}
    wanted = ["gunicorn", "uvicorn", "uvicorn-worker"]
    assert builder_script.missing_server_packages(named, wanted) == ["uvicorn-worker"]
    assert (
        builder_script.missing_server_packages({"uvicorn-worker": None}, ["uvicorn_worker"]) == []
    )
    # Version ranges are compared by name.
    ranged = ["uvicorn-worker>=0.4,<0.5"]
    assert builder_script.missing_server_packages({"uvicorn-worker": None}, ranged) == []
    assert builder_script.missing_server_packages({}, ranged) == ranged


def test_an_old_pinned_uvicorn_keeps_its_own_worker_and_gets_no_uvicorn_worker() -> None:
    wanted = ["gunicorn", "uvicorn", "uvicorn-worker>=0.4,<0.5"]
    old = builder_script.requirement_names(["uvicorn[standard]==0.26.0", "gunicorn==21.0.1"])
    assert old == {"uvicorn": "0.26.0", "gunicorn": "21.0.1"}
    assert builder_script.missing_server_packages(old, wanted) == []
    new = builder_script.requirement_names(["uvicorn==0.36.1 ; python_version >= '3.9'"])
    assert builder_script.missing_server_packages(new, wanted) == [
        "gunicorn",
        "uvicorn-worker>=0.4,<0.5",
    ]
    ranged = builder_script.requirement_names(["uvicorn>=0.20"])  # resolved to a new one
    assert builder_script.missing_server_packages(ranged, wanted)[-1].startswith("uvicorn-worker")


def test_requirement_file_names_follow_includes(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("gunicorn==23.0\n", encoding="utf-8")
    (tmp_path / "prod.txt").write_text("-r base.txt\nflask\n", encoding="utf-8")
    assert set(builder_script.requirement_file_names(str(tmp_path / "prod.txt"))) == {
        "gunicorn",
        "flask",
    }


def test_editable_lines_become_plain_paths(tmp_path: Path) -> None:
    (tmp_path / "more.txt").write_text("--editable=./b\n", encoding="utf-8")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("-e ./a\n-r more.txt\nflask\n", encoding="utf-8")
    builder_script.drop_editable(reqs)
    assert reqs.read_text(encoding="utf-8") == "./a\n-r more.txt\nflask\n"
    assert (tmp_path / "more.txt").read_text(encoding="utf-8") == "./b\n"


def test_resolve_copies_the_uploaded_inputs_to_the_build_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inputs pydeploy sent (job["inputs"]) are copied to the writable build dir,
    directories and single files alike, modes kept; stale build output is not."""
    inputs, work = tmp_path / "src", tmp_path / "build" / "src"
    (inputs / "app" / "vendor" / "pkg" / "dist").mkdir(parents=True)
    (inputs / "app" / "vendor" / "pkg" / "pyproject.toml").write_text(
        "[project]\n", encoding="utf-8"
    )
    (inputs / "app" / "vendor" / "pkg" / "dist" / "old.whl").write_bytes(b"x")
    script = inputs / "app" / "vendor" / "pkg" / "build.sh"
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    (inputs / "wheels").mkdir()
    (inputs / "wheels" / "w-1.0-py3-none-any.whl").write_bytes(b"wheel")
    job = {
        "inputs": str(inputs),
        "work": str(work),
        "copies": ["app", "wheels/w-1.0-py3-none-any.whl"],
        "cwd": "app",
        "source": "pylock",
        "requirement_lines": ["./vendor/pkg", "../wheels/w-1.0-py3-none-any.whl"],
        "server_packages": ["gunicorn"],
        **skip_lists(),  # the host's shared skip list, as wheels sends it
    }
    # Only the keys resolve reads here: the full document is pinned by test_job_keys.
    cwd, args, pins, added, _ = builder_script.resolve(cast("InstallJob", job), "uv-not-run")
    assert cwd == work / "app"
    assert (args, pins, added) == (
        ["-r", builder_script.REQUIREMENTS, "gunicorn"],
        [],
        ["gunicorn"],
    )
    assert (work / "app" / "vendor" / "pkg" / "pyproject.toml").is_file()
    assert (work / "app" / "vendor" / "pkg" / "build.sh").stat().st_mode & 0o777 == 0o755
    assert not (work / "app" / "vendor" / "pkg" / "dist").exists()
    assert (work / "wheels" / "w-1.0-py3-none-any.whl").read_bytes() == b"wheel"
    lines = (cwd / builder_script.REQUIREMENTS).read_text(encoding="utf-8").splitlines()
    assert lines == job["requirement_lines"]
    assert "##pydeploy:begin resolve" in capsys.readouterr().out


# --- app interface detection ------------------------------------------------------------------


class AsgiApp:
    async def __call__(self, scope: object, receive: object, send: object) -> None:
        del scope, receive, send


class WsgiApp:
    def __call__(self, environ: object, start_response: object) -> list[bytes]:
        del environ, start_response
        return []


def wsgi_function(environ: object, start_response: object) -> list[bytes]:
    return []


async def asgi_function(scope: object, receive: object, send: object) -> None:
    return None


def star_args(*args: object) -> None:
    return None


def factory_shaped(config: object = None) -> object:
    return config


def one_argument(scope: object) -> object:
    return scope


def four_arguments(a: object, b: object, c: object, d: object) -> object:
    return (a, b, c, d)


def test_a_uv_lock_is_exported_with_the_hosts_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script has no dev-group rule of its own: it runs the options the plan chose
    (depinputs.uv_export_options), which the ejected Dockerfile runs too."""
    inputs, work = tmp_path / "src", tmp_path / "build" / "src"
    (inputs / "app").mkdir(parents=True)
    (inputs / "app" / "uv.lock").write_text("version = 1\n", encoding="utf-8")
    ran: list[list[str]] = []

    def fake_run(step: str, argv: list[str], cwd: str | None = None, env: object = None) -> None:
        ran.append(argv)
        Path(cwd or ".", builder_script.REQUIREMENTS).write_text("flask==3.0\n", "utf-8")

    monkeypatch.setattr(builder_script, "run", fake_run)
    export = ["--frozen", "--quiet", "--group", "dev", "--extra", "fast"]
    job = {
        "inputs": str(inputs),
        "work": str(work),
        "copies": ["app"],
        "cwd": "app",
        "source": "uv.lock",
        "export": export,
        "groups": ["dev"],
        "server_packages": ["flask"],
        **skip_lists(),
    }
    _, args, _, added, _ = builder_script.resolve(cast("InstallJob", job), "/uv")
    assert ran == [["/uv", "export", *export, "--output-file", builder_script.REQUIREMENTS]]
    assert (args, added) == (["-r", builder_script.REQUIREMENTS], [])


def test_a_host_read_lock_installs_as_locked_then_the_servers(tmp_path: Path) -> None:
    """poetry.lock, pdm.lock, Pipfile.lock lines: `--no-deps` (nothing resolved, hashes
    checked by uv), then the missing server packages resolved on their own, constrained to
    the locked versions so that they never move a locked package."""
    inputs, work = tmp_path / "src", tmp_path / "build" / "src"
    (inputs / "app").mkdir(parents=True)
    lines = [
        "itsdangerous==2.2.0 --hash=sha256:aa --hash=sha256:bb",
        'tomli==2.0.1 ; python_version < "3.11" --hash=sha256:cc',
        "lib @ git+https://git.example/lib.git@0123abcd",
        "./libs/localpkg",
    ]
    job = {
        "inputs": str(inputs),
        "work": str(work),
        "copies": ["app"],
        "cwd": "app",
        "source": "poetry.lock",
        "requirement_lines": lines,
        "server_packages": ["gunicorn", "itsdangerous"],
        **skip_lists(),
    }
    cwd, args, pins, added, servers = builder_script.resolve(cast("InstallJob", job), "/uv")
    assert args == ["--no-deps", "-r", builder_script.REQUIREMENTS]
    assert (pins, added) == ([], ["gunicorn"])
    assert servers == ["gunicorn", "-c", builder_script.CONSTRAINTS]
    constraints = (cwd / builder_script.CONSTRAINTS).read_text(encoding="utf-8").splitlines()
    assert constraints == ["itsdangerous==2.2.0", 'tomli==2.0.1 ; python_version < "3.11"']
    assert (cwd / builder_script.REQUIREMENTS).read_text(encoding="utf-8").splitlines() == lines
    job["server_packages"] = ["itsdangerous"]
    assert builder_script.resolve(cast("InstallJob", job), "/uv").servers == []


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (AsgiApp(), "asgi"),
        (WsgiApp(), "wsgi"),
        (wsgi_function, "wsgi"),
        (asgi_function, "asgi"),
        (AsgiApp, "class"),
        (42, "not-callable"),
        (star_args, "unknown"),
        (factory_shaped, "no-arguments"),  # an app factory's shape
        (one_argument, "unknown"),
    ],
)
def test_interface_of(obj: object, kind: str) -> None:
    assert builder_script.interface_of(obj) == kind


# --- light jobs ---------------------------------------------------------------------------


def test_light_install_allows_building_only_the_local_packages() -> None:
    assert builder_script.light_install_args(["fastsum", "b", "fastsum"]) == [
        "--only-binary",
        ":all:",
        "--no-binary",
        "b",
        "--no-binary",
        "fastsum",
    ]
    assert builder_script.light_install_args([]) == ["--only-binary", ":all:"]


def test_pinned_constraints_keep_index_versions_only() -> None:
    compiled = [
        "click==8.1.7",
        "uvicorn[standard]==0.30.0",
        "fastsum @ file:///build/src/vendor/fastsum",
        "./vendor/other",
        "-e ./vendor/editable",
        "--index-url https://example.invalid/simple",
        "# a comment",
        "",
    ]
    assert builder_script.pinned_constraints(compiled) == ["click==8.1.7", "uvicorn==0.30.0"]


def test_stand_in_compilers_cover_sysconfig_and_target_names() -> None:
    config = {
        "CC": "x86_64-linux-gnu-gcc -pthread",
        "CXX": "/opt/tools/bin/my-c++ -pthread",
        "LDSHARED": "x86_64-linux-gnu-gcc -shared",
        "CPP": "",
    }
    names = builder_script.compiler_names(config, "aarch64")
    assert {"cc", "gcc", "c++", "clang", "cargo", "x86_64-linux-gnu-gcc", "my-c++"} <= set(names)
    assert "aarch64-linux-gnu-gcc" in names
    assert "" not in names


def test_the_lifeline_hands_over_secrets_for_the_tools_and_reports_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(builder_script, "SECRETS", {})
    read, write = os.pipe()
    gone = threading.Event()
    try:
        os.write(write, b'{"UV_INDEX_PYDEPLOY_1_PASSWORD": "s3cr3t"}\n')
        watcher = builder_script.take_lifeline(read, gone.set)
        assert watcher is not None
        assert builder_script.SECRETS == {"UV_INDEX_PYDEPLOY_1_PASSWORD": "s3cr3t"}
        assert "UV_INDEX_PYDEPLOY_1_PASSWORD" not in os.environ
        env = builder_script.tool_env({"PATH": "/bin"})
        assert env == {"PATH": "/bin", "UV_INDEX_PYDEPLOY_1_PASSWORD": "s3cr3t"}
        assert not gone.is_set()
        os.close(write)  # pydeploy died: the engine closes the container's stdin
        write = -1
        assert gone.wait(timeout=30)
        watcher.join(timeout=30)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def test_a_lifeline_that_ends_before_the_secrets_line_means_gone() -> None:
    read, write = os.pipe()
    os.write(write, b'{"partial": ')
    os.close(write)
    gone: list[bool] = []
    try:
        assert builder_script.take_lifeline(read, lambda: gone.append(True)) is None
    finally:
        os.close(read)
    assert gone == [True]


@pytest.mark.parametrize(
    "name", ["Django", "zope.interface", "ruamel_yaml", "A__B-.c", "flask-SQLAlchemy", "pkg1.2"]
)
def test_the_payload_normalizes_names_as_packaging_does(name: str) -> None:
    # The payload is stdlib-only, so it keeps its own copy of PEP 503 normalization.
    assert builder_script.normalize(name) == canonicalize_name(name)


# --- find_app: the target as the server will use it ---------------------------------------

FACTORIES = """
calls = []


def wsgi(environ, start_response):
    return []


def create_app(config_name, debug=False):
    calls.append((config_name, debug))
    return wsgi


def make_asgi():
    async def app(scope, receive, send):
        return None
    return app


def broken():
    raise KeyError("SECRET_KEY")


def returns_none():
    return None


def returns_factory():
    return create_app


async def async_factory():
    return wsgi


class Settings:
    pass


NOT_CALLABLE = 42
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of factories importable under a name unique to this test."""
    name = f"factories_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(FACTORIES, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_factory_is_called_with_the_target_s_literals(factories: str) -> None:
    found = builder_script.find_app(f'{factories}:create_app("production", debug=True)')
    app = found.pop("app")
    assert found == {
        "ok": True,
        "kind": "wsgi",
        "interface": "wsgi",
        "factory": True,
        "type": "builtins.function",
        "accepts": None,
    }
    module = __import__(factories)
    assert module.calls == [("production", True)]
    assert app is module.wsgi  # what the measurement serves: the factory's result


def test_a_zero_argument_factory_returning_asgi(factories: str) -> None:
    found = builder_script.find_app(f"{factories}:make_asgi()")
    assert (found["ok"], found["interface"], found["factory"]) == (True, "asgi", True)


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("broken()", "factory"),
        ("returns_none()", "not-callable"),
        ("returns_factory()", "unknown"),  # create_app: a one-argument function
        ("async_factory()", "async-factory"),
        ("NOT_CALLABLE()", "not-a-factory"),
        ("Settings()", "not-callable"),
        ("make_asgi", "no-arguments"),
        ("returns_none", "no-arguments"),
        ("create_app", "unknown"),
        ("missing", "attribute"),
        ("create_app(os.environ)", "target"),
    ],
)
def test_what_is_neither_an_app_nor_a_factory_of_one(
    factories: str, target: str, kind: str
) -> None:
    found = builder_script.find_app(f"{factories}:{target}")
    assert found["ok"] is False
    assert found["kind"] == kind, found
    assert "app" not in found
    if kind == "factory":
        assert "KeyError: 'SECRET_KEY'" in found["error"]


def test_an_import_failure_is_reported(factories: str) -> None:
    found = builder_script.find_app("no_such_module_here:app")
    assert (found["ok"], found["kind"]) == (False, "import")


@pytest.mark.parametrize(
    ("obj", "takes"),
    [
        (wsgi_function, ["wsgi"]),
        (asgi_function, ["asgi"]),
        (star_args, ["wsgi", "asgi"]),
        (one_argument, ["asgi"]),  # ASGI 2's single argument
        (factory_shaped, ["asgi"]),
        (four_arguments, []),
        (len, ["asgi"]),
    ],
)
def test_accepts_names_the_calls_a_signature_takes(obj: object, takes: list[str]) -> None:
    assert builder_script.accepts(obj) == takes


def test_the_install_s_library_scan_is_elfdeps_result_with_its_library_path(
    tmp_path: Path,
) -> None:
    script = tmp_path / "elfdeps.py"
    script.write_bytes(payload.source("elfdeps.py"))
    venv = tmp_path / "venv"
    (venv / "lib").mkdir(parents=True)
    (venv / "lib" / "plain.py").write_text("x = 1\n", encoding="utf-8")
    scan = builder_script.ElfScanJob(script=str(script), library_path="/opt/lib")
    found = builder_script.scan_libraries(str(venv), sys.executable, scan)
    assert found is not None
    assert (found["files"], found["missing"], found["library_path"]) == (0, [], "/opt/lib")
    # A scan that fails leaves the answer to the host's own scan container.
    script.write_text("import sys\nsys.exit(1)\n", encoding="utf-8")
    assert builder_script.scan_libraries(str(venv), sys.executable, scan) is None
