"""SBOM and provenance on the real engine and the session's registry (Debian's
docker-registry 2.8, which has no referrers API: the referrers tag schema is what runs):
`build --push --sbom --provenance` of the FastAPI example, the SBOM validated with
cyclonedx-python-lib's own strict validator, the fallback tag read over plain HTTP, a
second push that keeps what is there, `inspect` of the registry reference, and the OCI
layout output."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import pytest
import requests
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from pydeploy.oci.blobs import sha256_digest
from pydeploy.oci.config import canonical_json
from pydeploy.plan.references import parse_reference
from pydeploy.publish import registry

if TYPE_CHECKING:
    from tests.integration.conftest import Resources

ROOT = Path(__file__).resolve().parents[2]
FASTAPI = ROOT / "examples" / "fastapi-app"
CYCLONEDX = "application/vnd.cyclonedx+json"
IN_TOTO = "application/vnd.in-toto+json"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pydeploy", *args],
        capture_output=True, text=True, check=False, env=dict(os.environ), timeout=timeout,
    )  # fmt: skip


def build(project: Path, base: str, *extra: str) -> dict[str, Any]:
    proc = cli("build", str(project), "--base", base, "--network", "host", "--json", *extra)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def get(url: str, accept: str | None = None) -> requests.Response:
    # The session's registry is on loopback: no proxy, plain HTTP.
    session = requests.Session()
    session.trust_env = False
    with session:
        return session.get(url, headers={"Accept": accept} if accept else {}, timeout=30)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "sbom-app"
    shutil.copytree(FASTAPI, copy)
    return copy


def pins(result: dict[str, Any]) -> dict[str, str]:
    return dict(pin.split("==", 1) for pin in result["dependencies"]["pins"])


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1]


@dataclass(frozen=True)
class Pushed:
    project: Path
    tag: str
    root: str  # http://REGISTRY/v2/REPOSITORY
    result: dict[str, Any]
    sbom_file: Path
    provenance_file: Path

    @property
    def digest(self) -> str:
        digest: str = self.result["pushed"][self.tag]
        return digest

    def fallback(self, digest: str | None = None) -> requests.Response:
        return get(f"{self.root}/manifests/sha256-{hex_of(digest or self.digest)}", INDEX)


@pytest.fixture(scope="module")
def pushed(
    base_image: str, registry: str, tmp_path_factory: pytest.TempPathFactory,
    session_resources: Resources,
) -> Pushed:  # fmt: skip
    """`build --push --sbom --provenance` of a copy of the FastAPI example."""
    tmp = tmp_path_factory.mktemp("sbom")
    copy = tmp / "sbom-app"
    shutil.copytree(FASTAPI, copy)
    repository = f"sbom-{uuid.uuid4().hex[:10]}"
    tag = session_resources.image(f"{registry}/{repository}:1")  # --push also loads it
    sbom_file, provenance_file = tmp / "sbom.json", tmp / "provenance.json"
    result = build(copy, base_image, "--tag", tag, "--push", "--sbom", str(sbom_file),
                   "--provenance", str(provenance_file))  # fmt: skip
    root = f"http://{registry}/v2/{repository}"
    return Pushed(copy, tag, root, result, sbom_file, provenance_file)


def test_sbom_is_valid_and_lists_the_exact_pins_and_the_base_by_digest(
    pushed: Pushed, base_image: str, docker_client: docker.DockerClient
) -> None:
    text = pushed.sbom_file.read_text(encoding="utf-8")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    sbom = json.loads(text)
    image = sbom["metadata"]["component"]
    repository = pushed.tag.rsplit(":", 1)[0]
    assert (image["name"], image["version"]) == (repository, pushed.digest)
    components = {c["name"].lower().replace("_", "-"): c for c in sbom["components"]}
    versions = pins(pushed.result)
    for name in ("fastapi", "uvicorn", "starlette", "pydantic"):
        assert components[name]["version"] == versions[name]
        assert components[name]["purl"] == f"pkg:pypi/{name}@{versions[name]}"
        assert components[name]["licenses"], name
        assert components[name]["hashes"][0]["alg"] == "SHA-256"
    assert components["fastapi"]["licenses"] == [{"license": {"id": "MIT"}}]
    assert components["uvicorn"]["licenses"] == [{"license": {"id": "BSD-3-Clause"}}]
    # Every installed distribution is listed, the venv's and the server's alike.
    listed = {n for n, c in components.items() if c.get("purl", "").startswith("pkg:pypi/")}
    assert listed == set(versions)
    base = components[base_image.lower()]
    assert base["version"] == docker_client.images.get(base_image).id
    assert base["purl"].startswith(f"pkg:oci/{base_image.split(':', 1)[0]}@sha256:")


def test_the_fallback_tag_lists_artifacts_that_refer_to_the_pushed_image(pushed: Pushed) -> None:
    fallback = pushed.fallback()
    assert fallback.status_code == 200
    entries = {e["artifactType"]: e for e in fallback.json()["manifests"]}
    assert set(entries) == {CYCLONEDX, IN_TOTO}
    in_result = {(a["kind"], a["digest"], a["referrers"]) for a in pushed.result["attestations"]}
    assert in_result == {
        ("sbom", entries[CYCLONEDX]["digest"], "tag-schema"),
        ("provenance", entries[IN_TOTO]["digest"], "tag-schema"),
    }
    documents = {}
    for artifact_type, entry in entries.items():
        manifest = get(f"{pushed.root}/manifests/{entry['digest']}", MANIFEST).json()
        assert manifest["artifactType"] == artifact_type
        assert manifest["subject"]["digest"] == pushed.digest
        assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        (layer,) = manifest["layers"]
        documents[artifact_type] = get(f"{pushed.root}/blobs/{layer['digest']}").content
    assert documents[CYCLONEDX] == pushed.sbom_file.read_bytes()
    assert documents[IN_TOTO] == pushed.provenance_file.read_bytes()
    statement = json.loads(pushed.provenance_file.read_text(encoding="utf-8"))
    assert statement["subject"][0]["digest"] == {"sha256": hex_of(pushed.digest)}
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"


def test_inspect_shows_the_referrers_of_a_registry_reference(pushed: Pushed) -> None:
    sbom = json.loads(pushed.sbom_file.read_text(encoding="utf-8"))
    shown = cli("inspect", f"registry:{pushed.tag}", "--json")
    assert shown.returncode == 0, shown.stderr
    remote = json.loads(shown.stdout)
    assert remote["manifest_digest"] == pushed.digest
    counts = {r["artifact_type"]: r["components"] for r in remote["referrers"]}
    assert counts == {CYCLONEDX: len(sbom["components"]), IN_TOTO: 1}
    human = cli("inspect", f"registry:{pushed.tag}")
    assert CYCLONEDX in human.stdout
    assert f"{len(sbom['components'])} components" in human.stdout
    printed = cli("inspect", pushed.tag, "--sbom")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == sbom


def foreign_referrer(pushed: Pushed) -> dict[str, Any]:
    """Another tool's artifact for the image (a signature, say), added to the fallback
    index as such a tool would: the next attach must keep it."""
    ref = parse_reference(pushed.tag)
    blob, empty = b"signature bytes", b"{}"
    subject = {
        "mediaType": MANIFEST,
        "digest": pushed.digest,
        "size": len(get(f"{pushed.root}/manifests/{pushed.digest}", MANIFEST).content),
    }
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": SIGNATURE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256_digest(empty), "size": 2},
        "layers": [{"mediaType": SIGNATURE, "digest": sha256_digest(blob), "size": len(blob)}],
        "subject": subject,
    })  # fmt: skip
    digest = sha256_digest(manifest)
    with registry.RegistryClient(dataclasses.replace(ref, tag=None, digest=digest),
                                 push=True) as client:  # fmt: skip
        for data in (blob, empty):
            client.upload_blob(sha256_digest(data), len(data), functools.partial(bytes, data))
        client.put_manifest(manifest, MANIFEST)
    entry = {"mediaType": MANIFEST, "digest": digest, "size": len(manifest),
             "artifactType": SIGNATURE}  # fmt: skip
    index = pushed.fallback().json()
    index["manifests"].append(entry)
    tagged = dataclasses.replace(ref, tag=f"sha256-{hex_of(pushed.digest)}", digest=None)
    with registry.RegistryClient(tagged, push=True) as client:
        client.put_manifest(canonical_json(index), INDEX)
    return entry


def test_a_second_push_keeps_the_index_and_no_attest_attaches_nothing(
    pushed: Pushed, base_image: str
) -> None:
    theirs = foreign_referrer(pushed)
    before = pushed.fallback().json()["manifests"]
    assert theirs in before
    shown = json.loads(cli("inspect", f"registry:{pushed.tag}", "--json").stdout)
    assert {"artifact_type": SIGNATURE, "digest": theirs["digest"], "size": theirs["size"],
            "components": None} in shown["referrers"]  # fmt: skip
    sbom_digest = next(e["digest"] for e in before if e["artifactType"] == CYCLONEDX)
    # Pushed again (no provenance asked): the same SBOM, not listed twice; the rest kept.
    again = build(pushed.project, base_image, "--tag", pushed.tag, "--push")
    assert again["pushed"][pushed.tag] == pushed.digest
    assert [a["digest"] for a in again["attestations"]] == [sbom_digest]
    assert pushed.fallback().json()["manifests"] == before
    # A code change pushed with --no-attest: a new manifest, and no referrers for it.
    main = pushed.project / "main.py"
    main.write_text(main.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    bare = build(pushed.project, base_image, "--tag", pushed.tag, "--push", "--no-attest")
    assert bare["attestations"] == []
    assert pushed.fallback(bare["pushed"][pushed.tag]).status_code == 404


def test_oci_layout_holds_the_sbom_beside_the_image(
    project: Path, base_image: str, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    result = build(project, base_image, "--tag", "sbom-layout:1", "--output", f"oci:{layout}")
    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    image_entry, sbom_entry = index["manifests"]  # the image first: readers that take the first
    assert image_entry["digest"] == result["manifest_digest"]
    assert sbom_entry["artifactType"] == CYCLONEDX
    (attested,) = result["attestations"]
    assert (attested["digest"], attested["where"]) == (sbom_entry["digest"], f"oci:{layout}")
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / sbom_entry["digest"].split(":", 1)[1]).read_bytes())
    assert manifest["subject"]["digest"] == result["manifest_digest"]
    document = (blobs / manifest["layers"][0]["digest"].split(":", 1)[1]).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    assert json.loads(document)["metadata"]["component"]["version"] == result["manifest_digest"]
    # A reader that names the image still finds it among the layout's manifests.
    proc = subprocess.run(["skopeo", "inspect", f"oci:{layout}:1"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Digest"] == result["manifest_digest"]
