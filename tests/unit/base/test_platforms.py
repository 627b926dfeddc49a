from __future__ import annotations

import pytest

from pydeploy.base.platforms import Platform, host_platform
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
