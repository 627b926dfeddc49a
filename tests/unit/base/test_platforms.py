from __future__ import annotations

from pathlib import Path

import pytest

from pydeploy.base.platforms import Platform, architecture_of, host_platform
from pydeploy.config.project import load_project
from pydeploy.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected", "shown", "machine"),
    [
        ("linux/amd64", Platform("linux", "amd64"), "linux/amd64", "x86_64"),
        ("linux/arm64", Platform("linux", "arm64"), "linux/arm64", "aarch64"),
        ("linux/arm64/v8", Platform("linux", "arm64"), "linux/arm64", "aarch64"),
        ("linux/aarch64", Platform("linux", "arm64"), "linux/arm64", "aarch64"),
        ("linux/x86_64", Platform("linux", "amd64"), "linux/amd64", "x86_64"),
        ("linux/arm/v7", Platform("linux", "arm", "v7"), "linux/arm/v7", "armv7l"),
    ],
)
def test_parse(text: str, expected: Platform, shown: str, machine: str) -> None:
    parsed = Platform.parse(text)
    assert parsed == expected
    assert str(parsed) == shown
    assert parsed.machine() == machine


@pytest.mark.parametrize(
    "text",
    ["amd64", "linux", "windows/amd64", "linux/sparc", "linux/amd64/v3", "linux/arm", "a/b/c/d"],
)
def test_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="not a platform pydeploy can build for"):
        Platform.parse(text)


def test_matches_index_fields() -> None:
    arm64 = Platform.parse("linux/arm64")
    assert arm64.matches("linux", "arm64", "v8")
    assert arm64.matches("linux", "arm64")
    assert not arm64.matches("linux", "amd64")
    assert not Platform.parse("linux/arm/v7").matches("linux", "arm", "v6")


def test_host_platform_round_trips() -> None:
    host = host_platform()
    assert Platform.parse(str(host)) == host


@pytest.mark.parametrize(
    ("machine", "architecture"),
    [("x86_64", "amd64"), ("aarch64", "arm64"), ("armv7l", "arm"), ("i686", "386"),
     ("ppc64le", "ppc64le"), ("amd64", "amd64"), ("arm64", "arm64")],
)  # fmt: skip
def test_architecture_of_a_machine_name(machine: str, architecture: str) -> None:
    assert architecture_of(machine) == architecture


@pytest.mark.parametrize("text", ["linux/sparc", "linux/amd64/v3", "linux/arm", "windows/amd64"])
def test_the_config_refuses_what_the_cli_refuses(text: str, tmp_path: Path) -> None:
    """One grammar: `platforms` in the table is checked by the same rules as --platform."""
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\nversion = "1"\n[tool.pydeploy]\napp = "m:app"\n'
        f'platforms = ["{text}"]\n',
        encoding="utf-8",
    )
    (tmp_path / "m.py").write_text("app = None\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="platforms"):
        load_project(tmp_path)
