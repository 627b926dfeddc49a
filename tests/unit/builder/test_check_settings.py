"""`writable`, `check-env` and `check.skip` without an engine: what the configuration
accepts and refuses (naming the key), what the plan, the image's layer, `pydeploy run`
and the manifests make of them, what the app check's report of a failed import turns
into, and what its cached answer is keyed by."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from tests.unit.builder.conftest import MakePlan
from tests.unit.builder.fake_engine import BASE, FakeEngine, checks

from pydeploy.builder import appcheck
from pydeploy.builder.transcript import Reporting
from pydeploy.config.project import load_project
from pydeploy.deploy import dockerfile, manifests
from pydeploy.deploy import run as runner
from pydeploy.errors import AppCheckError, ConfigError
from pydeploy.layers import assemble
from pydeploy.plan.planner import WRITABLE_ROLE, BuildPlan, Overrides, make_plan

IMAGE = "shop:1@sha256:" + "ab" * 32


def plan_with(tmp_path: Path, table: str, source: str = "") -> BuildPlan:
    root = tmp_path / "p"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'shop'\nversion = '1'\n\n[tool.pydeploy]\n" + textwrap.dedent(table),
        encoding="utf-8",
    )
    (root / "app.py").write_text(
        source or "def app(environ, start_response):\n    return []\n", encoding="utf-8"
    )
    return make_plan(load_project(root), Overrides(base_image=BASE))


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("../etc", "holds `..`"),
        ("/", "is / itself"),
        (".", "is /app itself"),
        ("/app", "is /app itself"),
        ("/var", "is /var itself"),
        ("/proc/self", "inside /proc"),
        ("/opt/venv/cache", "inside /opt/venv"),
        ("/opt/venv/var", "inside /opt/venv"),
        ("/opt/pydeploy", "inside /opt/pydeploy"),
        ("/etc/app", "inside /etc"),
        ("/tmp/cache", "inside /tmp, which is writable already"),
        ("", "is empty"),
    ],
)
def test_a_writable_entry_that_cannot_be_a_mount_names_the_key(
    tmp_path: Path, entry: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_with(tmp_path, f"app = 'app:app'\nwritable = [{json.dumps(entry)}]\n")
    assert "`tool.pydeploy.writable`" in caught.value.message
    assert says in caught.value.message


def test_an_installed_flask_package_s_instance_folder_can_be_writable(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "app = 'app:app'\nwritable = ['/opt/venv/var/shop-instance']\n")
    assert plan.writable == ("/opt/venv/var/shop-instance",)


def test_nested_writable_entries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lists /app/logs/old inside /app/logs"):
        plan_with(tmp_path, "app = 'app:app'\nwritable = ['logs', 'logs/old']\n")


def test_check_env_names_are_checked_like_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`tool.pydeploy.check-env` `'1X'` is not a valid"):
        plan_with(tmp_path, "app = 'app:app'\n[tool.pydeploy.check-env]\n1X = 'a'\n")


def test_the_plan_resolves_writable_and_shows_check_env_by_name_only(tmp_path: Path) -> None:
    plan = plan_with(
        tmp_path,
        """\
        app = "app:app"
        writable = ["./logs", "instance", "/var/lib/shop"]
        [tool.pydeploy.check-env]
        SECRET_KEY = "placeholder-value"
        """,
    )
    assert plan.writable == ("/app/instance", "/app/logs", "/var/lib/shop")
    document = plan.to_json()
    assert document["writable"] == ["/app/instance", "/app/logs", "/var/lib/shop"]
    assert document["check"] == {"skip": False, "env": ["SECRET_KEY"]}
    assert "placeholder-value" not in json.dumps(document)
    roles = [layer["role"] for layer in document["layers"]]
    assert roles[-3:] == ["app", WRITABLE_ROLE, "launcher"], "after the app, which it re-owns"
    assert "SECRET_KEY" not in dict(plan.env), "check-env never reaches the image's env"


def test_writable_directories_are_the_users_in_their_own_layer(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "app = 'app:app'\nuser-id = 4242\nwritable = ['logs', '/srv/x']\n")
    entries = assemble.writable_entries(plan)
    assert [(e.path, e.kind, e.mode, e.uid, e.gid) for e in entries] == [
        ("app/logs", "dir", 0o755, 4242, 4242),
        ("srv/x", "dir", 0o755, 4242, 4242),
    ]


# --- check.skip -------------------------------------------------------------------------


def test_skip_takes_the_detected_interface_and_measures_nothing(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "app = 'app:app'\n[tool.pydeploy.check]\nskip = true\n")
    skipped = appcheck.skipped(plan)
    assert (skipped.interface, skipped.status, skipped.cached) == ("wsgi", "skipped", False)
    assert skipped.memory.worker_mib is None
    assert plan.to_json()["check"]["skip"] is True


def test_skip_with_a_configured_interface_and_worker_memory(tmp_path: Path) -> None:
    table = """\
        app = "app:app"
        [tool.pydeploy.check]
        skip = true
        [tool.pydeploy.server]
        interface = "asgi"
        worker-memory = 96
        """
    skipped = appcheck.skipped(plan_with(tmp_path, table, "from x import make\napp = make()\n"))
    assert (skipped.interface, skipped.memory.worker_mib) == ("asgi", 96)


def test_skip_without_a_known_interface_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    table = "app = 'app:app'\n[tool.pydeploy.check]\nskip = true\n"
    with pytest.raises(ConfigError) as caught:
        plan_with(tmp_path, table, "from somewhere import make\napp = make()\n")
    assert "`tool.pydeploy.check.skip` = true" in caught.value.message
    assert "tool.pydeploy.server.interface" in caught.value.message


# --- where the image runs: pydeploy run and the manifests -------------------------------


def test_run_and_the_manifests_mount_the_writable_directories(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "app = 'app:app'\nwritable = ['logs', '/var/lib/shop']\n")
    spec = runner.make_spec(plan, "img", bridge=False)
    owned = "uid=10001,gid=10001,mode=0755"
    assert spec.tmpfs == {"/app/logs": owned, "/var/lib/shop": owned}
    deploy = manifests.spec_from_plan(plan, IMAGE)
    deployment = manifests.kubernetes(deploy)[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert sorted(mounts.values()) == ["/app/logs", "/home/app", "/tmp", "/var/lib/shop"]
    assert {v["name"]: v["emptyDir"] for v in pod["volumes"]} == {name: {} for name in mounts}
    service = manifests.compose(deploy)["services"]["shop"]
    assert service["read_only"] is True
    assert service["tmpfs"][-2:] == [
        "/app/logs:uid=10001,gid=10001",
        "/var/lib/shop:uid=10001,gid=10001",
    ]
    for doc in yaml.safe_load_all(manifests.render(manifests.kubernetes(deploy))):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


# --- what a failed import's report becomes ----------------------------------------------


def failing(engine: FakeEngine, plan: BuildPlan, report: dict[str, Any]) -> AppCheckError:
    engine.handlers["check"] = checks({"ok": False, **report})
    with pytest.raises(AppCheckError) as caught:
        appcheck.run_check(engine, plan, BASE, Reporting(lambda *_: None))
    return caught.value


def test_missing_variables_name_them_and_the_check_env_table(
    engine: FakeEngine, make: MakePlan
) -> None:
    report = {
        "kind": "import",
        "error": "pydantic_core._pydantic_core.ValidationError: 2 validation errors",
        "missing_env": ["DATABASE_URL", "SECRET_KEY"],
    }
    error = failing(engine, make(), report)
    assert "`DATABASE_URL` and `SECRET_KEY`" in error.message
    lines = '[tool.pydeploy.check-env]\nDATABASE_URL = "placeholder"\nSECRET_KEY = "placeholder"'
    assert lines in (error.hint or ""), "the lines to paste"
    assert "[tool.pydeploy.check-env]" in (error.hint or "")
    assert 'SECRET_KEY = "placeholder"' in (error.hint or "")
    assert "tool.pydeploy.app" not in error.message, "the target is fine; the settings are not"


def test_a_variable_already_given_is_not_reported_missing(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make('[tool.pydeploy.check-env]\nSECRET_KEY = "x-placeholder"\n')
    report = {"kind": "import", "error": "KeyError: 'SECRET_KEY'", "missing_env": ["SECRET_KEY"]}
    error = failing(engine, plan, report)
    assert "does not import in the runtime image" in error.message


def test_a_refused_write_names_the_path_and_the_exact_writable_line(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make('writable = ["logs"]\n')
    unwritable = {"path": "/app/instance", "directory": "/app/instance", "error": "Read-only"}
    error = failing(engine, plan, {"kind": "factory", "factory": True, "unwritable": unwritable})
    assert "The app writes /app/instance" in error.message
    assert 'add `writable = ["logs", "instance"]`' in (error.hint or "")
    assert "`tool.pydeploy.writable`" in (error.hint or "")


def test_a_refused_write_outside_what_writable_takes_says_so(
    engine: FakeEngine, make: MakePlan
) -> None:
    unwritable = {"path": "/app/app.log", "directory": "/app", "error": "Read-only file system"}
    error = failing(engine, make(), {"kind": "import", "unwritable": unwritable})
    assert "/app cannot be made writable" in (error.hint or "")
    assert "subdirectory" in (error.hint or "")


def test_check_env_values_are_masked_in_what_the_check_printed(
    engine: FakeEngine, make: MakePlan
) -> None:
    plan = make('[tool.pydeploy.check-env]\nTOKEN = "s3cr3t-placeholder"\n')
    report = {"kind": "import", "error": "ValueError: bad token s3cr3t-placeholder"}
    error = failing(engine, plan, report)
    assert "s3cr3t-placeholder" not in error.message
    assert "s3cr3t-placeholder" not in (error.output or "")


# --- the cached answer's key ------------------------------------------------------------


def test_the_check_is_keyed_by_the_image_its_env_and_every_check_setting(
    tmp_path: Path,
) -> None:
    def key(table: str = "", image: tuple[str, ...] = ("base", "app"), env: str = "A=1") -> str:
        (tmp_path / "p").mkdir(exist_ok=True)
        plan = plan_with(tmp_path, "app = 'app:app'\n" + table)
        return appcheck.cache_key(plan, list(image), dict([env.split("=")]), "10001:10001")

    same = key()
    assert key() == same, "the same inputs give the same key"
    changed = [
        key(image=("base", "app2")),
        key(env="A=2"),
        key("[tool.pydeploy.check-env]\nK = 'v1'\n"),
        key("[tool.pydeploy.check-env]\nK = 'v2'\n"),
        key("writable = ['logs']\n"),
        key("[tool.pydeploy.server]\nworker-memory = 64\n"),
    ]
    assert len({same, *changed}) == 1 + len(changed)


def test_the_ejected_dockerfile_makes_the_writable_directories_the_users(tmp_path: Path) -> None:
    plan = plan_with(tmp_path, "app = 'app:app'\nwritable = ['logs', '/srv/x']\n")
    text = dockerfile.render(plan, created="1970-01-01T00:00:00Z", revision=None).dockerfile
    lines = text.splitlines()
    run = "RUN mkdir -p /app/logs /srv/x && chown 10001:10001 /app/logs /srv/x && chmod 0755"
    at = next(i for i, line in enumerate(lines) if line.startswith(run))
    assert at > lines.index("COPY --from=source /src /app"), "after the app, which it re-owns"
