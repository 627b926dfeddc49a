"""Why an app's import failed, as the check in the runtime image reports it
(builder_script.diagnose): the missing environment variables, or the path a write was
refused at. Real exceptions, raised the way the libraries raise them."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from pydeploy.payload import builder_script


def raised(action: object) -> BaseException:
    assert callable(action)
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the exception is the subject
        return exc
    raise AssertionError("nothing was raised")


class ImproperlyConfigured(Exception):  # noqa: N818 - Django's name, which the check sees
    """Django's exception of that name (django.core.exceptions)."""


# --- missing variables ------------------------------------------------------------------


def test_a_missing_os_environ_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYDEPLOY_TEST_NOT_SET", raising=False)
    exc = raised(lambda: os.environ["PYDEPLOY_TEST_NOT_SET"])
    assert builder_script.missing_variables(exc) == ["PYDEPLOY_TEST_NOT_SET"]


def test_other_key_errors_name_no_variable() -> None:
    exc = raised(lambda: {"a": 1}["DATABASE_URL"])
    assert builder_script.missing_variables(exc) == []


class Settings(BaseModel):
    """Shaped as pydantic-settings' BaseSettings: its `env_prefix` is in model_config, and
    the instance under construction is a local of the frame that raises."""

    model_config = {"env_prefix": "app_"}  # type: ignore[typeddict-unknown-key]

    database_url: str
    secret_key: str
    debug: bool = False

    def __init__(self) -> None:
        super().__init__(**{k.lower(): v for k, v in os.environ.items() if k.startswith("APP_")})


def test_missing_settings_fields_name_their_variables_with_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_DEBUG", "true")
    exc = raised(Settings)
    assert isinstance(exc, ValidationError)
    assert builder_script.missing_variables(exc) == ["APP_DATABASE_URL", "APP_SECRET_KEY"]


def test_a_settings_error_that_is_not_a_missing_field_names_nothing() -> None:
    class Port(BaseModel):
        port: int

    assert builder_script.missing_variables(raised(lambda: Port(port="x"))) == []


@pytest.mark.parametrize(
    ("message", "names"),
    [
        ("Set the SECRET_KEY environment variable", ["SECRET_KEY"]),  # django-environ
        ("The SECRET_KEY setting must not be empty.", ["SECRET_KEY"]),  # Django
        ("environment variable DATABASE_URL is not set", ["DATABASE_URL"]),
        ("Cannot connect to the database", []),
    ],
)
def test_django_style_messages_name_the_variable(message: str, names: list[str]) -> None:
    def configure() -> None:
        raise ImproperlyConfigured(message)

    assert builder_script.missing_variables(raised(configure)) == names


def test_a_wrapped_failure_is_read_through_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYDEPLOY_TEST_TOKEN", raising=False)

    def load() -> None:
        try:
            os.environ["PYDEPLOY_TEST_TOKEN"]
        except KeyError as exc:
            raise RuntimeError("configuration failed") from exc

    found = builder_script.diagnose(raised(load))
    assert found == {"missing_env": ["PYDEPLOY_TEST_TOKEN"]}


# --- refused writes ---------------------------------------------------------------------


def _read_only(path: str, *_args: object) -> None:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)


def test_a_directory_the_app_makes_is_the_one_to_list(monkeypatch: pytest.MonkeyPatch) -> None:
    def mkdir(path: str, *_args: object) -> None:  # os.makedirs calls os.mkdir
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(os, "mkdir", mkdir)
    exc = raised(lambda: os.makedirs("logs", exist_ok=True))  # noqa: PTH103 - as apps write it
    found = builder_script.unwritable_path(exc, "/app")
    assert found == {
        "path": "/app/logs",
        "directory": "/app/logs",
        "error": os.strerror(errno.EROFS),
    }


def test_a_file_the_app_writes_names_its_directory() -> None:
    def write_log() -> None:
        _read_only("instance/app.db")

    found = builder_script.diagnose(raised(write_log))
    assert (found["unwritable"]["path"], found["unwritable"]["directory"]) == (
        str(Path.cwd() / "instance" / "app.db"),
        str(Path.cwd() / "instance"),
    )


def test_a_permission_error_on_a_root_owned_path_is_a_refused_write() -> None:
    def create_app() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/app/app.log")

    found = builder_script.diagnose(raised(create_app))
    assert found["unwritable"] == {
        "path": "/app/app.log",
        "directory": "/app",
        "error": os.strerror(errno.EACCES),
    }


def test_other_os_errors_are_not_refused_writes() -> None:
    exc = raised(lambda: Path("/nonexistent-pydeploy/x").read_text(encoding="utf-8"))
    assert builder_script.diagnose(exc) == {}
