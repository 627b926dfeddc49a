"""pydeploy.attest without an engine: the METADATA and dpkg parsers, the layer reader
and its cache, the CycloneDX document (checked with cyclonedx-python-lib's own strict
validator), the provenance statement (never an env value), the artifact manifests,
the referrers fallback index merge, the OCI layout attachment and the whole `attest`
on a real image in a blob store."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from pydeploy.attest import attach, contents, provenance, remote, sbom
from pydeploy.attest.contents import Contents, DebPackage, Distribution
from pydeploy.attest.referrers import (
    Artifact,
    Descriptor,
    attach_to_layout,
    fallback_tag,
    merge_referrers,
)
from pydeploy.attest.wanted import BuildRun, Wanted
from pydeploy.build import BuildResult
from pydeploy.builder.sharedlibs import RuntimePackages
from pydeploy.cachekeys import INDEX_SBOM_CONTENTS
from pydeploy.config.project import load_project
from pydeploy.oci.blobs import BlobStore, sha256_digest
from pydeploy.oci.config import EMPTY_JSON, MEDIA_TYPE_MANIFEST
from pydeploy.oci.entries import FileEntry
from pydeploy.oci.image import Image
from pydeploy.oci.layer import Layer, build_layer
from pydeploy.oci.layout import write_oci_layout
from pydeploy.plan.planner import Overrides, make_plan
from pydeploy.publish.outputs import Output

ROOT = Path(__file__).resolve().parents[2]
SITE = "opt/venv/lib/python3.11/site-packages"
SECRET = "s3cr3t-value-never-in-provenance"  # noqa: S105 - the value the test looks for

FASTAPI_METADATA = """Metadata-Version: 2.4
Name: fastapi
Version: 0.165.0
License-Expression: MIT
Classifier: License :: OSI Approved :: MIT License

FastAPI framework
"""
UVICORN_METADATA = """Metadata-Version: 2.1
Name: uvicorn
Version: 0.55.0
License: BSD-3-Clause
"""
CLASSIFIED_METADATA = """Metadata-Version: 2.1
Name: typing_extensions
Version: 4.16.0
License: UNKNOWN
Classifier: Programming Language :: Python
Classifier: License :: OSI Approved :: Python Software Foundation License
"""
DPKG_STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u13
Description: GNU C Library
 with a continuation line: Version: not-this

Package: libpq5
Status: install ok installed
Architecture: amd64
Version: 15.14-0+deb12u1

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def dist_entries(directory: str, metadata: str, record: bytes) -> list[FileEntry]:
    base = f"{SITE}/{directory}"
    return [
        FileEntry(f"{base}/METADATA", "file", 0o644, data=metadata.encode()),
        FileEntry(f"{base}/RECORD", "file", 0o644, data=record),
        FileEntry(f"{SITE}/{directory.split('-', 1)[0]}/__init__.py", "file", 0o644, data=b""),
    ]


def layer(store: BlobStore, role: str, entries: list[FileEntry]) -> Layer:
    return build_layer(entries, store=store, epoch=1, role=role, compress=False)


# --- parsers ------------------------------------------------------------------------


def test_metadata_prefers_the_licence_expression_then_the_field_then_classifiers() -> None:
    assert contents.parse_metadata(FASTAPI_METADATA) == (
        "fastapi", "0.165.0", "MIT", ("MIT License",)
    )  # fmt: skip
    assert contents.parse_metadata(UVICORN_METADATA) == (
        "uvicorn", "0.55.0", None, ("BSD-3-Clause",)
    )  # fmt: skip
    assert contents.parse_metadata(CLASSIFIED_METADATA)[3] == (
        "Python Software Foundation License",
    )
    text = "Name: x\nVersion: 1\nLicense: " + "Permission is hereby granted " * 10 + "\n"
    assert contents.parse_metadata(text)[3] == ()  # a licence's text is no name


def test_dpkg_status_gives_installed_packages_and_versions() -> None:
    status = contents.parse_dpkg_status(DPKG_STATUS)
    assert set(status) == {"libc6", "libpq5"}
    assert status["libc6"] == DebPackage("libc6", "2.36-9+deb12u13", "amd64")
    assert contents.system_packages(["libpq5", "libfoo"], status) == (
        DebPackage("libfoo", None, None),
        DebPackage("libpq5", "15.14-0+deb12u1", "amd64"),
    )


def test_read_contents_reads_layers_once_by_their_diff_ids(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    record = b"fastapi/__init__.py,sha256=abc,0\n"
    deps = layer(store, "dependencies-group-1", [
        *dist_entries("fastapi-0.165.0.dist-info", FASTAPI_METADATA, record),
        *dist_entries("uvicorn-0.55.0.dist-info", UVICORN_METADATA, b"r\n"),
    ])  # fmt: skip
    system = layer(store, "system", [
        FileEntry("var/lib/dpkg/status", "file", 0o644, data=DPKG_STATUS.encode()),
    ])  # fmt: skip
    app = layer(store, "app", dist_entries("myapp-1.0.dist-info", "Name: myapp\nVersion: 1.0\n",
                                           b"x\n"))  # fmt: skip
    found = contents.read_contents(store, [deps, system, app], ["libpq5"])
    assert [(d.name, d.version, d.layer) for d in found.distributions] == [
        ("fastapi", "0.165.0", "dependencies-group-1"),
        ("myapp", "1.0", "app"),
        ("uvicorn", "0.55.0", "dependencies-group-1"),
    ]
    fastapi = found.distributions[0]
    assert fastapi.record_sha256 == hashlib.sha256(record).hexdigest()
    assert fastapi.path == f"{SITE}/fastapi-0.165.0.dist-info"
    assert found.system_packages == (DebPackage("libpq5", "15.14-0+deb12u1", "amd64"),)
    assert len(store.index_keys(INDEX_SBOM_CONTENTS)) == 2  # dependencies, dpkg status
    # A code-only rebuild: the dependency and system tars are not read again.
    store.path(deps.diff_id).unlink()
    store.path(system.diff_id).unlink()
    assert contents.read_contents(store, [deps, system, app], ["libpq5"]) == found


# --- documents ------------------------------------------------------------------------

FACTS = sbom.ImageFacts(
    name="localhost:5000/app",
    reference="localhost:5000/app:1",
    digest="sha256:" + "a" * 64,
    image_id="sha256:" + "b" * 64,
    created=datetime.fromtimestamp(1, timezone.utc),
    base_image="localhost:5000/python:3.12-slim",
    base_digest="sha256:" + "c" * 64,
    base_digest_kind="image-id",
    pydeploy_version="0.1.0",
)
CONTENTS = Contents(
    distributions=(
        Distribution("fastapi", "0.165.0", "MIT", (), "d" * 64, f"{SITE}/f", "dependencies"),
        Distribution(
            "typing_extensions",
            "4.16.0",
            None,
            ("PSF-2.0", "Python Software Foundation License"),
            None,
            f"{SITE}/t",
            "dependencies",
        ),
    ),
    system_packages=(
        DebPackage("libpq5", "15.14-0+deb12u1", "amd64"),
        DebPackage("libfoo", None, None),
    ),
)


def test_cyclonedx_document_is_valid_and_says_what_the_image_holds() -> None:
    data = sbom.cyclonedx_json(FACTS, CONTENTS)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    assert data == sbom.cyclonedx_json(FACTS, CONTENTS)  # the same image, the same bytes
    doc = json.loads(data)
    assert doc["specVersion"] == "1.6"
    image = doc["metadata"]["component"]
    assert (image["name"], image["version"], image["type"]) == (
        "localhost:5000/app", FACTS.digest, "container"
    )  # fmt: skip
    assert image["purl"].startswith(f"pkg:oci/app@sha256:{'a' * 64}?")
    assert "tag=1" in image["purl"]
    by_name = {c["name"]: c for c in doc["components"]}
    base = by_name["localhost:5000/python:3.12-slim"]
    assert base["version"] == FACTS.base_digest
    assert base["purl"].startswith(f"pkg:oci/python@sha256:{'c' * 64}")
    fastapi = by_name["fastapi"]
    assert fastapi["purl"] == "pkg:pypi/fastapi@0.165.0"
    assert fastapi["licenses"] == [{"license": {"id": "MIT"}}]  # an expression of one id
    assert fastapi["hashes"] == [{"alg": "SHA-256", "content": "d" * 64}]
    typing = by_name["typing_extensions"]
    assert typing["purl"] == "pkg:pypi/typing-extensions@4.16.0"
    assert typing["licenses"] == [
        {"license": {"id": "PSF-2.0"}},
        {"license": {"name": "Python Software Foundation License"}},
    ]
    assert "hashes" not in typing
    assert by_name["libpq5"]["purl"] == "pkg:deb/debian/libpq5@15.14-0%2Bdeb12u1?arch=amd64"
    assert "purl" not in by_name["libfoo"]
    assert sbom.component_count(doc) == 5
    (edge,) = [d for d in doc["dependencies"] if d["ref"] == "image"]
    assert len(edge["dependsOn"]) == 5


def test_a_base_outside_any_registry_is_named_without_a_repository() -> None:
    purl = sbom.oci_purl("oci:/tmp/layout:3.12", "sha256:" + "e" * 64)
    assert purl.to_string() == f"pkg:oci/layout@sha256:{'e' * 64}"


def make_project(tmp_path: Path) -> Path:
    project = tmp_path / "svc"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "svc"\nversion = "1.0"\ndependencies = ["fastapi"]\n\n'
        f'[tool.pydeploy]\napp = "main:app"\n\n[tool.pydeploy.env]\nAPI_TOKEN = "{SECRET}"\n',
        encoding="utf-8",
    )
    (project / "main.py").write_text("app = None\n", encoding="utf-8")
    (project / "uv.lock").write_text("version = 1\n", encoding="utf-8")
    return project


def test_provenance_names_inputs_and_never_an_env_value(tmp_path: Path) -> None:
    plan = make_plan(load_project(make_project(tmp_path)), Overrides(tags=("svc:1",)), {})
    inputs = provenance.Inputs(
        base_image=plan.base_image, base_digest="sha256:" + "c" * 64,
        lock_files={"uv.lock": "sha256:" + "f" * 64}, git_revision="0" * 40, git_dirty=True,
    )  # fmt: skip
    run = provenance.Run(
        builder_id="pkg:pypi/pydeploy@0.1.0", invocation_id="abc123",
        started=datetime(2026, 1, 1, tzinfo=timezone.utc),
        finished=datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc),
        path="engine", dependencies_volume="pydeploy-venv-1",
    )  # fmt: skip
    doc = provenance.statement(
        "svc", "sha256:" + "a" * 64, plan=plan, tags=("svc:1",), inputs=inputs, run=run
    )
    assert SECRET not in json.dumps(doc)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["subject"] == [{"name": "svc", "digest": {"sha256": "a" * 64}}]
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    definition = doc["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["settings"]["env-names"] == ["API_TOKEN"]
    assert definition["externalParameters"]["tags"] == ["svc:1"]
    resolved = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert resolved["base-image"]["digest"] == {"sha256": "c" * 64}
    assert resolved["uv.lock"]["digest"] == {"sha256": "f" * 64}
    assert resolved["source"]["digest"] == {"gitCommit": "0" * 40}
    details = doc["predicate"]["runDetails"]
    assert details["metadata"] == {"invocationId": "abc123", "startedOn": "2026-01-01T00:00:00Z",
                                   "finishedOn": "2026-01-01T00:01:00Z"}  # fmt: skip


# --- artifacts and referrers ------------------------------------------------------------

SUBJECT = Descriptor(MEDIA_TYPE_MANIFEST, "sha256:" + "1" * 64, 1234)


def test_artifact_manifest_refers_to_its_subject() -> None:
    artifact = Artifact(
        sbom.MEDIA_TYPE, b'{"bomFormat": "CycloneDX"}', SUBJECT, "1970-01-01T00:00:01Z"
    )
    manifest = json.loads(artifact.manifest)
    assert manifest["artifactType"] == sbom.MEDIA_TYPE
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert sha256_digest(EMPTY_JSON) == manifest["config"]["digest"]
    (blob,) = manifest["layers"]
    assert blob["digest"] == sha256_digest(artifact.document)
    assert blob["mediaType"] == sbom.MEDIA_TYPE
    assert manifest["subject"] == {"mediaType": MEDIA_TYPE_MANIFEST, "digest": SUBJECT.digest,
                                   "size": 1234}  # fmt: skip
    assert artifact.descriptor.digest == sha256_digest(artifact.manifest)
    assert fallback_tag(SUBJECT.digest) == "sha256-" + "1" * 64


def test_fallback_index_merge_keeps_others_entries_and_is_idempotent() -> None:
    ours = Artifact(sbom.MEDIA_TYPE, b"{}", SUBJECT, "1970-01-01T00:00:01Z").referrer_entry()
    theirs = {"mediaType": MEDIA_TYPE_MANIFEST, "digest": "sha256:" + "9" * 64, "size": 5,
              "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}  # fmt: skip
    first = merge_referrers({"schemaVersion": 2, "manifests": [theirs]}, [ours])
    assert first["manifests"] == [theirs, ours]
    assert merge_referrers(first, [ours]) == first
    assert merge_referrers(None, [ours])["manifests"] == [ours]
    assert merge_referrers(None, [ours])["mediaType"] == "application/vnd.oci.image.index.v1+json"


def one_image(tmp_path: Path) -> tuple[BlobStore, Image]:
    store = BlobStore(tmp_path / "blobs")
    deps = layer(store, "dependencies-venv", dist_entries("fastapi-0.165.0.dist-info",
                                                     FASTAPI_METADATA, b"r\n"))  # fmt: skip
    app = layer(store, "app", [FileEntry("app/main.py", "file", 0o644, data=b"app = 1\n")])
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:01Z",
        "rootfs": {"type": "layers", "diff_ids": [deps.diff_id, app.diff_id]},
    }).encode()  # fmt: skip
    return store, Image.from_config(store, config, [deps, app])


def test_layout_lists_the_artifacts_after_the_image_once(tmp_path: Path) -> None:
    _, image = one_image(tmp_path)
    out = tmp_path / "layout"
    write_oci_layout(out, image, "1")
    subject = Descriptor(MEDIA_TYPE_MANIFEST, image.registry_manifest_digest(),
                         len(image.registry_manifest()))  # fmt: skip
    artifact = Artifact(sbom.MEDIA_TYPE, b'{"x": 1}', subject, "1970-01-01T00:00:01Z")
    attach_to_layout(out, [("sbom", artifact)])
    attach_to_layout(out, [("sbom", artifact)])
    index = json.loads((out / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [subject.digest, artifact.descriptor.digest]
    assert index["manifests"][1]["artifactType"] == sbom.MEDIA_TYPE
    stored = json.loads((out / "blobs" / "sha256" / artifact.descriptor.digest[7:]).read_bytes())
    assert stored["subject"]["digest"] == subject.digest
    assert (out / "blobs" / "sha256" / sha256_digest(b'{"x": 1}')[7:]).read_bytes() == b'{"x": 1}'


def fake_result(tmp_path: Path, image: Image) -> BuildResult:
    plan = make_plan(load_project(make_project(tmp_path)), Overrides(tags=("svc:1",)), {})
    return BuildResult(
        image=image, tags=("svc:1",), plan=plan, interface="asgi", server="gunicorn",
        pins=("fastapi==0.165.0",), dependencies_cached=True,
        dependencies_volume="pydeploy-venv-0f", runtime_packages=RuntimePackages(()),
        base_image_id="sha256:" + "c" * 64,
    )  # fmt: skip


def test_attest_writes_the_files_and_attaches_to_the_layout(tmp_path: Path) -> None:
    _, image = one_image(tmp_path)
    result = fake_result(tmp_path, image)
    out = tmp_path / "layout"
    write_oci_layout(out, image, "1")
    wanted = Wanted(tmp_path / "sbom.json", tmp_path / "prov.json")
    now = datetime.now(timezone.utc)
    outcome = attach.attest(result, [Output("oci", out)], wanted, BuildRun("id1", now, now))
    assert outcome.problems == []
    attached = outcome.attached
    assert [(a.kind, a.referrers, a.where) for a in attached] == [
        ("sbom", "layout", f"oci:{out}"), ("provenance", "layout", f"oci:{out}"),
    ]  # fmt: skip
    written = (tmp_path / "sbom.json").read_bytes()
    assert attached[0].artifact.document == written
    doc = json.loads(written)
    assert [c["name"] for c in doc["components"]][1:] == ["fastapi"]
    assert doc["metadata"]["component"]["version"] == image.manifest_digest
    statement = json.loads((tmp_path / "prov.json").read_bytes())
    assert statement["subject"][0]["digest"] == {"sha256": image.registry_manifest_digest()[7:]}
    resolved = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert any(d["name"] == "uv.lock" for d in resolved)
    assert SECRET not in json.dumps(statement)
    schema = json.loads((ROOT / "schema" / "build-result.schema.json").read_text())
    document = {**result.to_json(), "attestations": [a.to_json() for a in attached]}
    errors = jsonschema.Draft202012Validator(schema).iter_errors(document)
    assert [e.message for error in errors for e in error.context or [error]] == []


def test_nothing_is_read_without_a_file_or_an_output_that_takes_attachments(
    tmp_path: Path,
) -> None:
    _, image = one_image(tmp_path)
    result = fake_result(tmp_path, image)
    now = datetime.now(timezone.utc)
    run = BuildRun("id", now, now)
    assert attach.attest(result, [Output("docker")], Wanted(), run) == attach.Outcome()
    out = tmp_path / "layout"
    write_oci_layout(out, image, "1")
    assert (
        attach.attest(result, [Output("oci", out)], Wanted(attach=False), run) == attach.Outcome()
    )
    assert len(json.loads((out / "index.json").read_text())["manifests"]) == 1


@pytest.mark.parametrize(
    ("text", "engine_has_it", "expected"),
    [
        ("registry:localhost:5000/app:1", True, "localhost:5000/app:1"),
        ("localhost:5000/app:1", True, None),
        ("localhost:5000/app:1", False, "localhost:5000/app:1"),
        ("app:1", False, None),  # Docker Hub is never guessed
    ],
)
def test_inspect_reads_a_registry_when_told_or_when_the_engine_lacks_the_image(
    text: str, engine_has_it: bool, expected: str | None
) -> None:
    ref = remote.registry_reference(text, engine_has_it=engine_has_it)
    assert (str(ref) if ref else None) == expected


def test_an_attachment_that_fails_is_a_problem_reported_not_a_failed_build(
    tmp_path: Path,
) -> None:
    _, image = one_image(tmp_path)
    result = fake_result(tmp_path, image)
    now = datetime.now(timezone.utc)
    sbom_file = tmp_path / "sbom.json"
    gone = tmp_path / "not-a-layout"  # say, removed by someone else after the build wrote it
    outcome = attach.attest(
        result, [Output("oci", gone)], Wanted(sbom_file), BuildRun("i", now, now)
    )
    assert outcome.attached == []
    (problem,) = outcome.problems
    assert str(gone) in problem
    assert sbom_file.is_file()  # the file asked for is written all the same


def test_layers_left_in_the_registry_give_their_distributions_from_the_pins(
    tmp_path: Path,
) -> None:
    store = BlobStore(tmp_path / "blobs")
    here = layer(store, "dependencies-group-1",
                 dist_entries("fastapi-0.165.0.dist-info", FASTAPI_METADATA, b"r\n"))  # fmt: skip
    # A push that mounted this layer from the registry cache: no bytes of it on this host.
    away = Layer("dependencies-pydantic-core", "sha256:" + "7" * 64, "sha256:" + "8" * 64, 9, 9)
    pins = ["fastapi==0.165.0", "pydantic_core==2.50.5", "local @ file:///src/local"]
    found = contents.read_contents(store, [here, away], [], pins)
    assert found.unread == ("dependencies-pydantic-core",)
    assert [(d.name, d.version, d.path) for d in found.distributions] == [
        ("fastapi", "0.165.0", f"{SITE}/fastapi-0.165.0.dist-info"),
        ("pydantic_core", "2.50.5", ""),
    ]
    doc = json.loads(sbom.cyclonedx_json(FACTS, found))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc)) is None
    core = next(c for c in doc["components"] if c["name"] == "pydantic_core")
    assert core["purl"] == "pkg:pypi/pydantic-core@2.50.5"
    assert core["properties"] == [{"name": "pydeploy:source", "value": "pins"}]
    assert {"name": "pydeploy:unread-layers", "value": "dependencies-pydantic-core"} in (
        doc["metadata"]["component"]["properties"]
    )
