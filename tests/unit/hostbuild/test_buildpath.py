"""Which way a build goes (pydeploy.plan.buildpath): every rule, and every refusal."""

from __future__ import annotations

import pytest

from pydeploy.errors import ConfigError, EngineError
from pydeploy.plan.buildpath import choose

AMD64 = "linux/amd64"


def _choose(**given: object) -> object:
    settings: dict[str, object] = {
        "platforms": (), "host": AMD64, "base": "python:3.12-slim", "outputs": ("docker",),
        "no_engine": False, "engine_answers": True,
    }  # fmt: skip
    settings.update(given)
    return choose(**settings)  # type: ignore[arg-type]


def test_an_engine_that_answers_builds_as_ever() -> None:
    path = _choose()
    assert (path.kind, path.uses_engine, path.platforms) == ("engine", True, ())  # type: ignore[attr-defined]


def test_no_engine_and_a_push_goes_to_the_host() -> None:
    path = _choose(engine_answers=False, outputs=("registry",))
    assert path.kind == "host"  # type: ignore[attr-defined]
    assert path.platforms == (AMD64,)  # type: ignore[attr-defined]
    assert not path.uses_engine  # type: ignore[attr-defined]
    assert "no engine answers" in path.reason  # type: ignore[attr-defined]


def test_no_engine_and_the_docker_output_is_an_engine_error_naming_the_ways_out() -> None:
    with pytest.raises(EngineError, match="output `docker`") as caught:
        _choose(engine_answers=False)
    assert "--push" in caught.value.message
    assert "oci:DIR" in caught.value.message


def test_no_engine_flag_never_uses_one_and_refuses_the_docker_output() -> None:
    path = _choose(no_engine=True, outputs=("oci",))
    assert (path.kind, path.uses_engine, path.reason) == ("host", False, "--no-engine")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="--no-engine"):
        _choose(no_engine=True)


def test_several_platforms_install_on_the_host_and_use_the_engine_for_the_check() -> None:
    path = _choose(platforms=(AMD64, "linux/arm64"), outputs=("registry",))
    assert path.kind == "host"  # type: ignore[attr-defined]
    assert path.platforms == (AMD64, "linux/arm64")  # type: ignore[attr-defined]
    assert path.uses_engine  # type: ignore[attr-defined]
    assert "2 platforms" in path.reason  # type: ignore[attr-defined]


def test_a_foreign_platform_alone_goes_to_the_host() -> None:
    path = _choose(platforms=("linux/arm64",), outputs=("registry",), engine_answers=False)
    assert path.kind == "host"  # type: ignore[attr-defined]
    assert "not this host's" in path.reason  # type: ignore[attr-defined]


def test_the_host_s_own_platform_named_stays_on_the_engine() -> None:
    assert _choose(platforms=(AMD64,)).kind == "engine"  # type: ignore[attr-defined]


def test_a_base_read_from_a_file_goes_to_the_host_even_with_an_engine() -> None:
    path = _choose(base="oci:/tmp/base", outputs=("registry",))
    assert path.kind == "host"  # type: ignore[attr-defined]
    assert "read from a file" in path.reason  # type: ignore[attr-defined]
