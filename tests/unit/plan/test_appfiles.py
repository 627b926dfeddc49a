"""What reaches the app layer: never secrets/VCS/venvs; ignore files and config honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError
from pydeploy.oci.blobs import BlobStore
from pydeploy.plan import secretscan
from pydeploy.plan.appfiles import LARGE_FILE, AppFiles, app_files
from pydeploy.plan.planner import make_plan

FILES = [
    "main.py",
    "pkg/__init__.py",
    "pkg/views.py",
    "pkg/__pycache__/views.cpython-311.pyc",
    "templates/index.html",
    ".env",
    ".env.production",
    ".git/config",
    ".venv/bin/python",
    "venv/lib/x.py",
    "tests/test_main.py",
    "test_top.py",
    "build/lib/main.py",
    "dist/demo-1.0.whl",
    "node_modules/x/index.js",
    "logs/debug.log",
    "pkg/local_settings.py",
    "static/app.js",
    "static/app.js.map",
    "docs/guide.md",
    "frontend/build/bundle.js",
    "id_rsa",
]


def make_project(tmp_path: Path, table: str = "") -> Path:
    for rel in FILES:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {rel}\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1.0"\n[tool.pydeploy]\napp = "main:app"\n' + table
    )
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "pkg" / ".gitignore").write_text("local_settings.py\n")
    (tmp_path / ".dockerignore").write_text("docs\nstatic/*.map\n")
    return tmp_path


def paths(root: Path) -> set[str]:
    plan = make_plan(load_project(root))
    return {e.path for e in app_files(plan).entries if e.kind == "file"}


def test_default_filtering(tmp_path: Path) -> None:
    kept = paths(make_project(tmp_path))
    assert kept == {
        "app/main.py",
        "app/pkg/__init__.py",
        "app/pkg/views.py",
        "app/templates/index.html",
        "app/static/app.js",
        "app/pyproject.toml",
        "app/.gitignore",
        "app/pkg/.gitignore",
        "app/.dockerignore",
    }


def test_include_brings_back_build_outputs_and_tests_but_never_secrets(tmp_path: Path) -> None:
    # `.env*` also names files include may bring back (`.envrc`), so it is no error ...
    table = 'include = ["frontend/build/", ".env*", "tests/"]\nexclude-tests = false\n'
    kept = paths(make_project(tmp_path, table))
    assert "app/frontend/build/bundle.js" in kept
    assert "app/tests/test_main.py" in kept
    assert "app/test_top.py" in kept
    assert "app/.env" not in kept, "... but .env is never included"
    assert not any(p.startswith("app/.git/") for p in kept)


def test_configured_excludes(tmp_path: Path) -> None:
    kept = paths(make_project(tmp_path, 'exclude = ["templates/", "*.html"]\n'))
    assert "app/templates/index.html" not in kept
    assert "app/main.py" in kept


@pytest.mark.parametrize("name", [".env", ".git/config", ".venv/bin/python", "id_rsa"])
def test_never_list(tmp_path: Path, name: str) -> None:
    assert f"app/{name}" not in paths(make_project(tmp_path))


def test_entries_are_root_owned_and_not_group_writable(tmp_path: Path) -> None:
    root = make_project(tmp_path)
    (root / "main.py").chmod(0o777)
    plan = make_plan(load_project(root))
    for entry in app_files(plan).entries:
        assert entry.uid == 0
        assert entry.gid == 0
        assert entry.mode & 0o022 == 0, entry


# --- credential-shaped files, warnings, symlinks (issue 10) ---------------------------------

CREDENTIAL_FILES = [
    ".aws/credentials",
    ".ssh/id_ed25519",
    ".docker/config.json",
    ".kube/config",
    ".npmrc",
    ".envrc",
    ".htpasswd",
    "credentials.json",
    "terraform.tfstate",
    ".bash_history",
    "client.p12",
    "deploy/.aws/credentials",
    "deploy/.docker/config.json",
]


def small_project(tmp_path: Path, table: str = "", files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "proj"
    for rel, text in {"main.py": "app = None\n", **(files or {})}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "1.0"\n[tool.pydeploy]\napp = "main:app"\n' + table
    )
    return root


def selected(root: Path) -> AppFiles:
    return app_files(make_plan(load_project(root)))


@pytest.mark.parametrize("name", CREDENTIAL_FILES)
def test_credential_shaped_files_stay_out(tmp_path: Path, name: str) -> None:
    root = small_project(tmp_path, files={name: "secret\n"})
    kept = {e.path for e in selected(root).entries}
    assert "app/main.py" in kept
    assert f"app/{name}" not in kept


def test_a_gitignore_negation_does_not_bring_credentials_back(tmp_path: Path) -> None:
    root = small_project(
        tmp_path, files={".npmrc": "//r/:_authToken=x\n", ".gitignore": "!.npmrc\n"}
    )
    assert "app/.npmrc" not in {e.path for e in selected(root).entries}


def test_include_brings_a_credential_back_with_a_warning(tmp_path: Path) -> None:
    root = small_project(
        tmp_path, 'include = [".npmrc", ".aws/config"]\n',
        {".npmrc": "registry=x\n", ".aws/config": "[default]\n", ".aws/credentials": "k\n"},
    )  # fmt: skip
    result = selected(root)
    kept = {e.path for e in result.entries}
    assert {"app/.npmrc", "app/.aws/config"} <= kept
    assert "app/.aws/credentials" not in kept
    config, npmrc = sorted(result.warnings)
    assert config.startswith(".aws/config is credential-shaped")
    assert npmrc.startswith(".npmrc is credential-shaped")
    assert all("tool.pydeploy.include" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        (".env", "`.env`"),
        ("config/.env", "`.env`"),
        ("**/.env", "`.env`"),
        ("/.env.production", "`.env.*`"),
        (".git/", "`.git/`"),
        (".git/config", "`.git/`"),
        (".venv/", "`.venv/`"),
        ("*.pyc", "`*.py[cod]`"),
    ],
)
def test_include_of_a_never_shipped_file_is_a_config_error(
    tmp_path: Path, pattern: str, matched: str
) -> None:
    """`include` cannot override the never list: naming such a file is an error saying
    why, not a silent no-op."""
    root = small_project(tmp_path, f"include = [{pattern!r}]\n", {".env": "A=1\n"})
    with pytest.raises(ConfigError) as info:
        selected(root)
    assert f"{pattern!r}" in str(info.value)
    assert matched in str(info.value)
    assert "cannot bring it back" in str(info.value)


@pytest.mark.parametrize("pattern", ["secrets.env", ".envrc", "!.env", ".env*", "static/"])
def test_include_of_files_the_never_list_does_not_own_is_fine(tmp_path: Path, pattern: str) -> None:
    root = small_project(tmp_path, f"include = [{pattern!r}]\n", {".env": "A=1\n"})
    assert "app/.env" not in {e.path for e in selected(root).entries}


AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"  # split, so this file itself does not look like one
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"


def test_a_file_that_looks_like_a_secret_is_warned_about_by_path(tmp_path: Path) -> None:
    root = small_project(
        tmp_path,
        files={
            "config/keys.py": f'AWS = "{AWS_KEY}"\n',
            "certs/server.txt": PRIVATE_KEY,
            "clean.py": "x = 1\n",
        },
    )
    result = selected(root)
    assert "app/config/keys.py" in {e.path for e in result.entries}, "warned, not dropped"
    assert len(result.warnings) == 2
    keyfile, keys = result.warnings
    assert keyfile.startswith("certs/server.txt looks like it holds a secret (Private Key")
    assert keys.startswith("config/keys.py looks like it holds a secret (AWS Access Key on line 1")
    assert AWS_KEY not in keys, "the warning never repeats the secret"


def test_the_secret_scan_skips_binary_and_big_files(tmp_path: Path) -> None:
    root = small_project(
        tmp_path,
        files={"big.txt": f"{AWS_KEY}\n" + "x" * (secretscan.SCAN_LIMIT + 1)},
    )
    (root / "blob.bin").write_bytes(b"\0" + AWS_KEY.encode())
    assert selected(root).warnings == ()


def test_the_secret_scan_is_cached_by_path_size_and_mtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = small_project(tmp_path, files={"keys.py": f'AWS = "{AWS_KEY}"\n', "a.py": "x = 1\n"})
    plan = make_plan(load_project(root))
    store = BlobStore(tmp_path / "store")
    first = app_files(plan, store=store).warnings
    scanned: list[list[str]] = []
    real = secretscan._detect

    def spy(top: Path, todo: list[str]) -> dict[str, tuple[tuple[str, int], ...]]:
        scanned.append(todo)
        return real(top, todo)

    monkeypatch.setattr(secretscan, "_detect", spy)
    assert app_files(plan, store=store).warnings == first
    (root / "a.py").write_text("y = 2\n")
    assert app_files(plan, store=store).warnings == first
    assert scanned == [[], ["a.py"]], "unchanged files are never scanned again"


def test_files_over_50_mb_are_warned_about(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    with (root / "model.bin").open("wb") as handle:
        handle.truncate(LARGE_FILE + 1)  # sparse: costs no disk
    (root / "fine.bin").write_bytes(b"\0" * 1024)
    (warning,) = selected(root).warnings
    assert warning.startswith("model.bin is 50 MB and goes into the app layer")


def test_a_symlink_out_of_the_project_is_refused_naming_it(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    outside = tmp_path / "elsewhere" / "settings.py"
    outside.parent.mkdir()
    outside.write_text("x = 1\n")
    (root / "conf").mkdir()
    (root / "conf" / "settings.py").symlink_to(outside)
    with pytest.raises(ConfigError) as caught:
        selected(root)
    message = caught.value.message
    assert f"{root / 'conf' / 'settings.py'} is a symlink to {outside}" in message
    assert "a path outside the repository" in message
    assert 'exclude = ["conf/settings.py"]' in message


def test_an_excluded_symlink_out_of_the_project_is_fine(tmp_path: Path) -> None:
    root = small_project(tmp_path, 'exclude = ["data"]\n')
    (root / "data").symlink_to("/etc")
    assert "app/data" not in {e.path for e in selected(root).entries}


def test_symlinks_inside_the_project_stay_links_without_host_paths(tmp_path: Path) -> None:
    root = small_project(tmp_path, files={"static/app.js": "1;\n"})
    (root / "static" / "latest.js").symlink_to("app.js")
    (root / "static" / "abs.js").symlink_to(root / "static" / "app.js")
    (root / "assets").symlink_to(root / "static")
    links = {e.path: e.linkname for e in selected(root).entries if e.kind == "symlink"}
    assert links == {
        "app/static/latest.js": "app.js",
        "app/static/abs.js": "app.js",
        "app/assets": "static",
    }
    assert not any(str(tmp_path) in target for target in links.values())


def test_a_symlink_to_a_repository_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # the repository holds the project and a shared file
    shared = tmp_path / "shared" / "logging.ini"
    shared.parent.mkdir()
    shared.write_text("[loggers]\n")
    root = small_project(tmp_path)
    (root / "logging.ini").symlink_to(shared)
    (entry,) = [e for e in selected(root).entries if e.path == "app/logging.ini"]
    assert (entry.kind, entry.source, entry.mode) == ("file", shared, 0o644)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        (".aws/credentials", "a file that never goes into an image"),
        ("shared", "a directory outside the project"),
    ],
)
def test_repository_links_to_secrets_or_directories_are_refused(
    tmp_path: Path, target: str, why: str
) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\n")
    (tmp_path / "shared").mkdir()
    root = small_project(tmp_path)
    (root / "linked").symlink_to(tmp_path / target)
    with pytest.raises(ConfigError, match=why):
        selected(root)
