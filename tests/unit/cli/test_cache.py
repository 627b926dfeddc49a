"""`inspect` and `prune` (cli/cache.py) against a fake engine: bad input is a paragraph or
a usage error with exit 2, a bug the internal-error line and its log (`--debug`: its
traceback); however the command ends, the session closed the engine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from pydeploy.cache import imageinfo
from pydeploy.cache import prune as cachegc
from pydeploy.engine.client import Engine
from pydeploy.errors import EngineError

if TYPE_CHECKING:
    from tests.unit.cli.conftest import Cli, FakeEngine

DONE = ["connect", "cleanup", "close"]


def debug_flag(debug: bool) -> list[str]:
    return ["--debug"] if debug else []


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(*_args: object, **_kwargs: object) -> None:
        raise EngineError("No Docker engine answers at tcp://127.0.0.1:9 (refused).")

    monkeypatch.setattr(Engine, "connect", connect)


def test_inspect_of_an_unknown_image_is_exit_2_and_closes_the_engine(
    runner: Cli, fake_engine: FakeEngine
) -> None:
    out = runner.run("inspect", "nothing:here")
    runner.assert_paragraph(out, 2, "config", "The engine has no image `nothing:here`.")
    assert fake_engine.calls == DONE


@pytest.mark.usefixtures("no_engine")
def test_inspect_without_an_engine_is_exit_3(runner: Cli) -> None:
    out = runner.run("inspect", "demo:1.0")
    runner.assert_paragraph(out, 3, "engine", "No Docker engine answers")


def test_inspect_prints_the_layers(
    runner: Cli, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = imageinfo.ImageInfo(
        name="demo:1.0", image_id="sha256:" + "3" * 64, user="10001", entrypoint=[],
        labels={}, layers=(imageinfo.LayerInfo("base", "sha256:" + "4" * 64, 5_000_000),
                           imageinfo.LayerInfo("app", "sha256:" + "5" * 64, 250_000)),
    )  # fmt: skip
    monkeypatch.setattr(imageinfo, "inspect_image", lambda *_args: info)
    out = runner.run("inspect", "demo:1.0")
    assert out.code == 0, out.output
    assert out.stdout.splitlines() == [
        f"demo:1.0 sha256:{'3' * 12}  user 10001",
        f"  base          sha256:{'4' * 12}       5.00 MB",
        f"  app           sha256:{'5' * 12}       0.25 MB",
        "  added on top of the base: 0.25 MB",
    ]
    as_json = runner.run("inspect", "demo:1.0", "--json")
    assert json.loads(as_json.stdout) == info.to_json()
    assert fake_engine.calls == DONE * 2


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_bug_in_inspect_is_reported_after_closing_the_engine(
    runner: Cli, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    monkeypatch.setattr(imageinfo, "inspect_image", runner.bug)
    out = runner.run(*debug_flag(debug), "inspect", "demo:1.0")
    runner.assert_bug(out, debug=debug)
    assert fake_engine.calls == DONE


def test_prune_with_a_negative_age_is_a_usage_error(runner: Cli) -> None:
    out = runner.run("prune", "--older-than", "-1")
    assert out.code == 2
    assert "Invalid value for '--older-than'" in out.stderr


@pytest.mark.usefixtures("no_engine")
def test_prune_without_an_engine_prunes_the_host_cache(runner: Cli) -> None:
    out = runner.run("prune", "--dry-run", "--json")
    assert out.code == 0, out.output
    assert out.stderr == (
        "pydeploy: No Docker engine answers at tcp://127.0.0.1:9 (refused). "
        f"Only the host cache ({runner.cache}) is pruned.\n"
    )
    document: dict[str, Any] = json.loads(out.stdout)
    assert document["engine"] is False
    assert document["dry_run"] is True
    assert document["cache_dir"] == str(runner.cache)
    text = runner.run("prune", "--dry-run")
    assert text.stdout.splitlines()[-1] == "pydeploy: would reclaim 0.0 kB (0 items)"


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_bug_in_prune_is_reported_after_closing_the_engine(
    runner: Cli, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, debug: bool
) -> None:
    monkeypatch.setattr(cachegc, "take_inventory", runner.bug)
    out = runner.run(*debug_flag(debug), "prune", "--dry-run")
    runner.assert_bug(out, debug=debug)
    assert fake_engine.calls == DONE


def test_a_cancelled_prune_is_exit_130_after_closing_the_engine(
    runner: Cli, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cachegc, "take_inventory", interrupted)
    out = runner.run("prune")
    assert out.code == 130
    assert out.stderr.strip() == "pydeploy: interrupted."
    assert fake_engine.calls == DONE
