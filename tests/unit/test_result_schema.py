"""schema/build-result.schema.json: the documented shape of `pydeploy build --json` and
`--metadata-file`. Documents are produced by the real BuildResult.to_json and
ServiceOutcome.to_json from fake build data (no engine); the integration tests validate
outputs of real builds against the same file."""

from __future__ import annotations

import copy
import hashlib
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest

from pydeploy.build import BuildResult
from pydeploy.builder.appcheck import AppCheck
from pydeploy.builder.sharedlibs import MissingLibrary, RuntimePackages
from pydeploy.config.models import ServerConfig
from pydeploy.config.project import load_project
from pydeploy.errors import EXIT_CODES, AppCheckError, PydeployError
from pydeploy.multibuild import ServiceOutcome
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.image import Image
from pydeploy.oci.layer import Layer
from pydeploy.plan.memory import WorkerMemory
from pydeploy.plan.planner import Overrides, make_plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schema" / "build-result.schema.json"
MONOREPO = ROOT / "examples" / "monorepo"
PSYCOPG_EXT = "lib/python3.12/site-packages/psycopg2/_psycopg.cpython-312-x86_64-linux-gnu.so"

Document = dict[str, Any]


def load_schema() -> Document:
    loaded: Document = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, document: object) -> list[str]:
    return [error.message for error in validator.iter_errors(document)]


def fake_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def fake_layer(role: str, size: int) -> Layer:
    return Layer(role, fake_digest(f"{role}-tar"), fake_digest(f"{role}-gz"), size, size * 3)


def fake_result(tmp_path: Path, service: str, *, pushed: bool = False) -> BuildResult:
    """A BuildResult as build() returns it, around a real plan of an example service."""
    plan = make_plan(
        load_project(MONOREPO / "services" / service),
        Overrides(base_image="pydeploy-test-base:bookworm", tags=("t1",), registry="reg:5000/x"),
    )
    image = Image(
        store=BlobStore(tmp_path / "blobs"),
        config=json.dumps({"service": service}).encode(),
        manifest=json.dumps({"manifest": service}).encode(),
        layers=tuple(
            fake_layer(role, size)
            for role, size in [
                ("base", 78_000_000),
                ("user", 700),
                ("dependencies-venv", 400_000),
                ("dependencies-pydantic-core", 5_000_000),
                ("dependencies-group-2", 600_000),
                ("app", 700),
                ("launcher", 9_700),
            ]
        ),
        base_layer_count=1,
    )
    return BuildResult(
        image=image,
        tags=plan.tags,
        plan=plan,
        interface="asgi" if service == "api" else "wsgi",
        server="gunicorn-uvicorn" if service == "api" else "gunicorn",
        pins=("gunicorn==27.0.1", "humanize==4.17.0", "shared==0.1.0"),
        dependencies_cached=False,
        dependencies_volume="pydeploy-venv-981d51c5f44f656a",
        timings={
            "base image": 0.01,
            "builder": 0.2,
            "dependencies": 3.5,
            "shared libraries": 3.6,
            "app check": 4.0,
            "layers": 5.0,
            "image": 5.1,
            "load": 6.25,
        },
        pushed={plan.tags[0]: image.registry_manifest_digest()} if pushed else {},
        runtime_packages=RuntimePackages(
            plan.runtime_packages,
            ("libpq5",),
            (MissingLibrary("libpq.so.5", (PSYCOPG_EXT,), "libpq5", "/usr/lib/libpq.so.5"),),
        ),
    )


def workspace_document(tmp_path: Path) -> Document:
    """`--all` with one service built and one failed, as cli._build_all assembles it."""
    outcomes = [
        ServiceOutcome(
            "api", MONOREPO / "services" / "api", fake_result(tmp_path, "api"), seconds=6.3
        ),
        ServiceOutcome(
            "web",
            MONOREPO / "services" / "web",
            error=AppCheckError(
                "`tool.pydeploy.app` = 'app:nope' has no attribute nope.",
                hint="Fix the attribute name.",
            ),
            seconds=2.0,
        ),
    ]
    return {"ok": all(o.ok for o in outcomes), "services": [o.to_json() for o in outcomes]}


# --- the schema itself ----------------------------------------------------------------


# Subschemas that constrain documented keys rather than document them.
CONDITIONS = {"if", "then", "else", "not"}


def _walk(node: object, where: str = "#") -> Iterator[tuple[str, Document]]:
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key not in CONDITIONS:
                yield from _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{where}/{index}")


def test_every_property_and_definition_is_described() -> None:
    schema = load_schema()
    missing = [f"#/$defs/{name}" for name, d in schema["$defs"].items() if "description" not in d]
    for where, node in _walk(schema):
        if where.endswith("/properties"):
            missing += [f"{where}/{key}" for key, prop in node.items() if "description" not in prop]
    assert missing == []


def test_every_documented_key_is_required_where_the_code_always_emits_it() -> None:
    # BuildResult.to_json and the --all wrapper emit every key, always: a key that is
    # documented but optional would hide a key the code stopped emitting.
    defs = load_schema()["$defs"]
    for name in ("buildResult", "workspaceResult", "error", "layer"):
        assert sorted(defs[name]["required"]) == sorted(defs[name]["properties"]), name
    dependencies = defs["buildResult"]["properties"]["dependencies"]
    assert sorted(dependencies["required"]) == sorted(dependencies["properties"])
    runtime = defs["buildResult"]["properties"]["runtime_packages"]
    assert sorted(runtime["required"]) == sorted(runtime["properties"])
    library = runtime["properties"]["libraries"]["items"]
    assert sorted(library["required"]) == sorted(library["properties"])


def test_error_kinds_and_servers_match_the_code() -> None:
    defs = load_schema()["$defs"]
    assert set(defs["error"]["properties"]["kind"]["enum"]) == {PydeployError.kind, *EXIT_CODES}
    for kind, code in EXIT_CODES.items():
        assert f"{code} {kind}" in defs["error"]["properties"]["exit_code"]["description"]
    configurable = set(typing.get_args(ServerConfig.model_fields["type"].annotation)) - {"auto"}
    assert set(defs["buildResult"]["properties"]["server"]["enum"]) == configurable


# --- real documents ---------------------------------------------------------------------


def test_a_single_build_result_validates(
    validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    document = fake_result(tmp_path, "api", pushed=True).to_json()
    assert document["tags"] == ["reg:5000/x/api:t1"]
    assert document["runtime_packages"]["automatic"] == ["libpq5"]
    assert errors(validator, document) == []
    # Through JSON and back, as a consumer reads it.
    assert errors(validator, json.loads(json.dumps(document))) == []


def test_a_docker_only_result_names_the_base_layers_by_diff_id_alone(
    validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    """A build whose only output is the engine reads none of the base's blobs: no
    manifest, and its base layers are known by diff ID alone."""
    result = fake_result(tmp_path, "api")
    own = result.image.own_layers
    base_ids = [fake_digest("base-a"), fake_digest("base-b")]
    config = json.dumps({"rootfs": {"diff_ids": [*base_ids, *(la.diff_id for la in own)]}})
    result.image = Image(result.image.store, config.encode(), None, own)
    document = result.to_json()
    assert document["manifest_digest"] is None
    unread = {"role": "base", "digest": None, "size": None, "uncompressed_size": None}
    assert document["layers"][:2] == [{**unread, "diff_id": d} for d in base_ids]
    assert [la["role"] for la in document["layers"][2:]] == [la.role for la in own]
    assert errors(validator, document) == []
    with pytest.raises(AssertionError, match="no manifest"):
        result.image.registry_manifest()


def test_the_app_check_s_outcome_is_reported_and_validates(
    validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    result = fake_result(tmp_path, "web")
    result.check = AppCheck(
        "wsgi", WorkerMemory(None, None, None), "skipped", where="", reason="check.skip"
    )
    assert result.to_json()["check"] == {
        "status": "skipped", "cached": False, "where": None, "reason": "check.skip"
    }  # fmt: skip
    assert errors(validator, result.to_json()) == []
    result.check = AppCheck("wsgi", WorkerMemory(64, 32, "measured at build"), cached=True)
    assert result.to_json()["check"] == {
        "status": "passed", "cached": True, "where": "image", "reason": None
    }  # fmt: skip
    assert errors(validator, result.to_json()) == []
    result.check = AppCheck("asgi", WorkerMemory(64, 32, "measured at build"), where="host",
                            reason="host (/usr/bin/python3.11)")  # fmt: skip
    assert result.to_json()["check"]["where"] == "host"
    assert errors(validator, result.to_json()) == []
    assert errors(validator, {**result.to_json(), "check": {"status": "maybe", "cached": 1}})


def test_a_workspace_result_with_a_failure_validates(
    validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    document = workspace_document(tmp_path)
    assert document["ok"] is False
    assert [s["status"] for s in document["services"]] == ["ok", "failed"]
    assert document["services"][1]["error"]["exit_code"] == 7
    assert errors(validator, document) == []


def test_an_internal_error_and_an_empty_selection_validate(
    validator: jsonschema.Draft202012Validator,
) -> None:
    crashed = ServiceOutcome(
        "api", MONOREPO / "services" / "api", error=PydeployError("internal error: KeyError: 'x'")
    )
    assert errors(validator, {"ok": False, "services": [crashed.to_json()]}) == []
    assert errors(validator, {"ok": True, "services": []}) == []


# --- wrong shapes are rejected ----------------------------------------------------------


def _drop(key: str) -> Callable[[Document], None]:
    return lambda target: target.pop(key)


def _set(key: str, value: object) -> Callable[[Document], None]:
    return lambda target: target.__setitem__(key, value)


SINGLE_MUTATIONS: dict[str, Callable[[Document], None]] = {
    "missing image_id": _drop("image_id"),
    "undocumented key": _set("surprise", 1),
    "short digest": _set("manifest_digest", "sha256:abc"),
    "tags not a list": _set("tags", "api:t1"),
    "no tags": _set("tags", []),
    "unknown interface": _set("interface", "rsgi"),
    "app without attribute": _set("app", "main"),
    "pushed digest not a digest": _set("pushed", {"reg/api:1": "latest"}),
    "timing not a number": _set("timings", {"load": "1s"}),
    "unknown layer role": lambda d: d["layers"][1].__setitem__("role", "cache"),
    "the old single dependency role": lambda d: d["layers"][2].__setitem__("role", "dependencies"),
    "negative layer size": lambda d: d["layers"][1].__setitem__("size", -1),
    "layer size as text": lambda d: d["layers"][1].__setitem__("size", "700"),
    "cached as text": lambda d: d["dependencies"].__setitem__("cached", "yes"),
    "pin without version": lambda d: d["dependencies"].__setitem__("pins", ["flask"]),
}


@pytest.mark.parametrize("mutate", SINGLE_MUTATIONS.values(), ids=SINGLE_MUTATIONS.keys())
def test_wrong_single_results_are_rejected(
    validator: jsonschema.Draft202012Validator,
    tmp_path: Path,
    mutate: Callable[[Document], None],
) -> None:
    document = fake_result(tmp_path, "web").to_json()
    assert errors(validator, document) == []
    mutate(document)
    assert errors(validator, document) != []


def _ok_without_result(doc: Document) -> None:
    doc["services"][0].pop("result")


def _ok_with_error(doc: Document) -> None:
    doc["services"][0]["error"] = copy.deepcopy(doc["services"][1]["error"])


def _failed_without_error(doc: Document) -> None:
    doc["services"][1].pop("error")


WORKSPACE_MUTATIONS: dict[str, Callable[[Document], None]] = {
    "ok as text": lambda d: d.__setitem__("ok", "false"),
    "missing services": lambda d: d.pop("services"),
    "services not a list": lambda d: d.__setitem__("services", {"api": {}}),
    "unknown status": lambda d: d["services"][0].__setitem__("status", "skipped"),
    "ok without result": _ok_without_result,
    "ok with an error": _ok_with_error,
    "failed without error": _failed_without_error,
    "unknown error kind": lambda d: d["services"][1]["error"].__setitem__("kind", "oops"),
    "exit code 0 for a failure": lambda d: d["services"][1]["error"].__setitem__("exit_code", 0),
    "result of the wrong shape": lambda d: d["services"][0]["result"].pop("layers"),
    "negative seconds": lambda d: d["services"][0].__setitem__("seconds", -1),
    "mixed shapes": lambda d: d.__setitem__("image_id", fake_digest("x")),
}


@pytest.mark.parametrize("mutate", WORKSPACE_MUTATIONS.values(), ids=WORKSPACE_MUTATIONS.keys())
def test_wrong_workspace_results_are_rejected(
    validator: jsonschema.Draft202012Validator,
    tmp_path: Path,
    mutate: Callable[[Document], None],
) -> None:
    document = workspace_document(tmp_path)
    assert errors(validator, document) == []
    mutate(document)
    assert errors(validator, document) != []


def test_a_multi_platform_result_validates(
    validator: jsonschema.Draft202012Validator, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from pydeploy.hostbuild import IndexResult

    amd64, arm64 = fake_result(tmp_path / "a", "web"), fake_result(tmp_path / "b", "web")
    digest = "sha256:" + "c" * 64
    index = cast("Any", SimpleNamespace(digest=digest))
    result = IndexResult([amd64, arm64], index, ("reg:5000/x/web:t1",), {"image": 1.5})
    result.pushed["reg:5000/x/web:t1"] = digest
    document = result.to_json()
    assert document["index_digest"] == digest
    assert errors(validator, document) == []
    assert errors(validator, {**document, "platforms": [document["platforms"][0]]})
    assert errors(validator, {**document, "index_digest": "nope"})
