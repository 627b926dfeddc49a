"""The registry cache's record format and where records go (pure parts)."""

from __future__ import annotations

import hashlib
import json

import pytest

from pydeploy.cache import records
from pydeploy.errors import ConfigError
from pydeploy.oci.layer import Layer
from pydeploy.plan.references import Reference
from pydeploy.plan.registrycache import NO_CACHE, cache_refs, plan_cache


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


KEY = hashlib.sha256(b"key").hexdigest()
LAYERS = (
    Layer("dependencies-venv", _digest("tar1"), _digest("gz1"), 10, 30),
    Layer("dependencies-group-1", _digest("tar2"), _digest("gz2"), 20, 60),
)
RECORD = records.Record(records.VENV, KEY, LAYERS, {"pins": ["a==1"], "compilers": False})


def test_a_record_reads_back_as_itself() -> None:
    data = records.manifest(RECORD)
    assert records.parse(data, records.VENV, KEY) == RECORD
    document = json.loads(data)
    assert document["artifactType"] == records.ARTIFACT_TYPE
    assert document["config"]["digest"] == _empty_digest()
    assert records.manifest(RECORD) == data, "the same record is the same bytes"


def _empty_digest() -> str:
    return "sha256:" + hashlib.sha256(b"{}").hexdigest()


def test_the_tag_fits_the_tag_grammar() -> None:
    tag = records.tag(records.VENV, KEY)
    assert tag == f"pydeploy-cache-venv-{KEY}"
    assert len(tag) <= 128


def _edited(edit: str) -> bytes:
    document = json.loads(records.manifest(RECORD))
    notes = document["annotations"]
    layer = document["layers"][0]
    if edit == "kind":
        notes["io.pydeploy.cache.kind"] = "system"
    elif edit == "key":
        notes["io.pydeploy.cache.key"] = "0" * 64
    elif edit == "recipe":
        notes["io.pydeploy.cache.recipe"] = "an older one"
    elif edit == "format":
        notes["io.pydeploy.cache.format"] = "2"
    elif edit == "document":
        notes["io.pydeploy.cache.document"] = "{not json"
    elif edit == "artifact":
        document["artifactType"] = "application/vnd.example+json"
    elif edit == "diff-id":
        layer["annotations"]["io.pydeploy.cache.diff-id"] = "sha256:short"
    elif edit == "uncompressed":
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    elif edit == "no-layers":
        document["layers"] = []
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ("kind", "kind"),
        ("key", "key"),
        ("recipe", "recipe"),
        ("format", "format"),
        ("document", "not JSON"),
        ("artifact", "not a pydeploy cache record"),
        ("diff-id", "malformed"),
        ("uncompressed", "gzipped"),
        ("no-layers", "no layers"),
    ],
)
def test_anything_not_this_builds_record_is_a_miss_with_a_reason(edit: str, why: str) -> None:
    found = records.parse(_edited(edit), records.VENV, KEY)
    assert isinstance(found, str)
    assert why in found


def test_garbage_is_a_miss() -> None:
    assert records.parse(b"\x00not json", records.VENV, KEY) == "not JSON"
    assert records.parse(b"[]", records.VENV, KEY) == "not a pydeploy cache record"


def test_records_name_gzipped_layers_only() -> None:
    plain = Layer("app", _digest("t"), _digest("t"), 5, 5)
    with pytest.raises(ValueError, match="gzipped"):
        records.manifest(records.Record(records.VENV, KEY, (plain,), {}))


# --- where: flags, `cache`, the push repository ------------------------------------------

PUSHED = ("ghcr.io/org/app:1.0", "ghcr.io/org/app:latest")


def test_a_push_uses_its_repository_by_default() -> None:
    refs = cache_refs(NO_CACHE, PUSHED, pushing=True)
    assert refs.pull == refs.push == Reference("ghcr.io", "org/app")


def test_without_a_push_there_is_no_default() -> None:
    assert not cache_refs(NO_CACHE, PUSHED, pushing=False).enabled


def test_the_cache_key_names_both_sides_and_false_turns_the_default_off() -> None:
    named = cache_refs(plan_cache(None, None, "ghcr.io/org/cache"), PUSHED, pushing=True)
    assert named.pull == named.push == Reference("ghcr.io", "org/cache")
    assert not cache_refs(plan_cache(None, None, False), PUSHED, pushing=True).enabled


def test_a_flag_decides_its_side_alone() -> None:
    plan = plan_cache("ghcr.io/org/cache", None, "ghcr.io/org/other")
    refs = cache_refs(plan, PUSHED, pushing=True)
    assert refs.pull == Reference("ghcr.io", "org/cache")
    assert refs.push is None, "--cache-from alone reads; nothing is written"


@pytest.mark.parametrize(
    "bad", ["ghcr.io/org/cache:tag", "ghcr.io/org/cache@sha256:" + "a" * 64, "Upper/Case"]
)
def test_a_flag_that_is_not_a_repository_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ConfigError, match="--cache-to"):
        plan_cache(None, bad, None)


def test_plan_says_where_the_cache_is() -> None:
    assert NO_CACHE.describe() == "the push repository, when the build pushes (default)"
    assert plan_cache(None, None, False).describe() == "none (tool.pydeploy.cache = false)"
    named = plan_cache("ghcr.io/o/c", None, None).describe()
    assert named == "from ghcr.io/o/c (--cache-from/--cache-to)"
