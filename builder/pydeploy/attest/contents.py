"""What an image holds from pydeploy's side, read from its layers: the Python
distributions installed in the venv (their dist-info METADATA and RECORD) and the Debian
packages the system layer added (its dpkg status). The parsers are pure; `read_contents`
reads the tars from the host blob store, remembering what the dependency and system
layers hold by their diff IDs (index `sbom-contents`) so a code-only rebuild reads only
the small app layer."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from email.parser import HeaderParser
from typing import Any

from pydeploy.cachekeys import INDEX_SBOM_CONTENTS, SBOM_CONTENTS_RECIPE
from pydeploy.layers.dependencies import is_dependency_role
from pydeploy.oci.blobs import BlobStore
from pydeploy.oci.layer import Layer, open_uncompressed

# `.../site-packages/NAME-VERSION.dist-info/FILE`, the two files read of each.
_DIST_INFO = re.compile(r"(?:^|/)site-packages/([^/]+\.dist-info)/(METADATA|RECORD)$")
_DPKG_STATUS = "var/lib/dpkg/status"
_LICENSE_CLASSIFIER = "License :: "
_MAX_LICENSE_TEXT = 100  # a `License:` longer than this is the licence's text, not its name


@dataclass(frozen=True)
class Distribution:
    """One installed distribution. `record_sha256` is the SHA-256 of its installed
    dist-info/RECORD file, which lists every installed file with that file's own hash:
    it pins what was installed, and is no wheel's hash."""

    name: str
    version: str
    license_expression: str | None  # License-Expression (PEP 639)
    licenses: tuple[str, ...]  # else `License:` (when a name) or the License classifiers
    record_sha256: str | None
    path: str  # the dist-info directory in the image ("" when from the pins)
    layer: str  # the role of the layer that holds it ("" when from the pins)


def from_pins(pins: Iterable[str], known: Iterable[Distribution]) -> list[Distribution]:
    """The pinned distributions (`name==version`) that `known` lacks, by name and version
    alone: for dependency layers this host does not have (a push that left them in the
    registry cache's registry), whose METADATA cannot be read without a download."""
    have = {_normal(d.name) for d in known}
    found = []
    for pin in pins:
        name, sep, version = pin.partition("==")
        if sep and _normal(name) not in have:
            found.append(Distribution(name.strip(), version.strip(), None, (), None, "", ""))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str | None  # None: not in the system layer's dpkg status
    architecture: str | None


@dataclass(frozen=True)
class Contents:
    distributions: tuple[Distribution, ...]
    system_packages: tuple[DebPackage, ...]
    unread: tuple[str, ...] = ()  # roles of the layers this host lacks the bytes of


def parse_metadata(text: str) -> tuple[str, str, str | None, tuple[str, ...]]:
    """(name, version, License-Expression, licences) of a METADATA file."""
    headers = HeaderParser().parsestr(text, headersonly=True)
    name = (headers.get("Name") or "").strip()
    version = (headers.get("Version") or "").strip()
    expression = (headers.get("License-Expression") or "").strip() or None
    declared = (headers.get("License") or "").strip()
    named = "\n" not in declared and len(declared) <= _MAX_LICENSE_TEXT
    licenses = [declared] if declared and named and declared.upper() != "UNKNOWN" else []
    if not licenses:
        licenses = [
            classifier.rsplit(" :: ", 1)[-1].strip()
            for classifier in headers.get_all("Classifier") or []
            if classifier.startswith(_LICENSE_CLASSIFIER)
        ]
    return name, version, expression, tuple(dict.fromkeys(licenses))


def parse_dpkg_status(text: str) -> dict[str, DebPackage]:
    """Installed packages of a dpkg status file, by name."""
    found: dict[str, DebPackage] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] not in {" ", "\t"} and ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        name = fields.get("Package")
        if name and "installed" in fields.get("Status", "installed").split():
            found[name] = DebPackage(name, fields.get("Version"), fields.get("Architecture"))
    return found


def system_packages(wanted: Iterable[str], status: dict[str, DebPackage]) -> tuple[DebPackage, ...]:
    """The packages pydeploy added, each with its version when the status has it."""
    return tuple(status.get(name, DebPackage(name, None, None)) for name in sorted(set(wanted)))


def _distributions(store: BlobStore, layer: Layer) -> list[Distribution]:
    files: dict[str, dict[str, bytes]] = {}
    with open_uncompressed(store, layer) as reader, tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            match = _DIST_INFO.search(member.name)
            if match is None or not member.isfile():
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                directory = member.name[: match.end(1)]
                files.setdefault(directory, {})[match.group(2)] = handle.read()
    found = []
    for directory, parts in sorted(files.items()):
        if "METADATA" not in parts:
            continue
        text = parts["METADATA"].decode("utf-8", errors="replace")
        name, version, expression, licenses = parse_metadata(text)
        record = parts.get("RECORD")
        digest = hashlib.sha256(record).hexdigest() if record is not None else None
        found.append(
            Distribution(name, version, expression, licenses, digest, directory, layer.role)
        )
    return found


def _dpkg_status(store: BlobStore, layer: Layer) -> str:
    with open_uncompressed(store, layer) as reader, tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            if member.name.lstrip("./") == _DPKG_STATUS and member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    return str(handle.read().decode("utf-8", errors="replace"))
    return ""


def _key(kind: str, layers: Sequence[Layer]) -> str:
    text = json.dumps([SBOM_CONTENTS_RECIPE, kind, [layer.diff_id for layer in layers]])
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_distributions(
    store: BlobStore, layers: Sequence[Layer]
) -> tuple[list[Distribution], tuple[Layer, ...]]:
    """The layers' distributions (the cached answer when there is one, whether or not the
    bytes are still here), and the layers that could not be read."""
    key = _key("distributions", layers)
    doc = store.read_index(INDEX_SBOM_CONTENTS, key)
    if isinstance(doc, list):
        try:
            return [_distribution_from_doc(entry) for entry in doc], ()
        except (KeyError, TypeError, ValueError):
            pass  # a foreign or older entry: read the layers again
    missing = tuple(layer for layer in layers if not _present(store, layer))
    found = [d for layer in layers if layer not in missing for d in _distributions(store, layer)]
    if not missing:  # a partial answer is not remembered
        store.write_index(INDEX_SBOM_CONTENTS, key, [asdict(d) for d in found])
    return found, missing


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def _distribution_from_doc(doc: Any) -> Distribution:
    return Distribution(
        name=str(doc["name"]), version=str(doc["version"]),
        license_expression=_optional(doc["license_expression"]),
        licenses=tuple(str(x) for x in doc["licenses"]),
        record_sha256=_optional(doc["record_sha256"]), path=str(doc["path"]),
        layer=str(doc["layer"]),
    )  # fmt: skip


def _cached_status(store: BlobStore, layer: Layer) -> dict[str, DebPackage] | None:
    """The system layer's dpkg status, or None when neither the cache nor the bytes are here."""
    key = _key("dpkg-status", [layer])
    doc = store.read_index(INDEX_SBOM_CONTENTS, key)
    if isinstance(doc, dict) and isinstance(doc.get("packages"), dict):
        return {
            str(n): DebPackage(str(p["name"]), p.get("version"), p.get("architecture"))
            for n, p in doc["packages"].items()
        }
    if not _present(store, layer):
        return None
    status = parse_dpkg_status(_dpkg_status(store, layer))
    store.write_index(
        INDEX_SBOM_CONTENTS, key, {"packages": {n: asdict(p) for n, p in status.items()}}
    )
    return status


def _present(store: BlobStore, layer: Layer) -> bool:
    return store.has(layer.diff_id) or store.has(layer.digest)


def read_contents(
    store: BlobStore, layers: Sequence[Layer], packages: Iterable[str], pins: Iterable[str] = ()
) -> Contents:
    """The distributions in the dependency layers (cached by their diff IDs) and in the
    app layer (the project's own wheel, when installed; read every time: it changes with
    the code), and `packages` with the versions the system layer's dpkg status gives. A
    dependency layer whose bytes are not here gives its distributions from `pins`."""
    deps = [layer for layer in layers if is_dependency_role(layer.role)]
    distributions, missing = _cached_distributions(store, deps)
    for layer in layers:
        if layer.role == "app":
            distributions.extend(_distributions(store, layer))
    if missing:
        distributions.extend(from_pins(pins, distributions))
    status: dict[str, DebPackage] = {}
    unread = [layer.role for layer in missing]
    for layer in layers:
        if layer.role == "system":
            found = _cached_status(store, layer)
            if found is None:
                unread.append(layer.role)
            status.update(found or {})
    unique = {(d.name.lower(), d.version): d for d in distributions}
    ordered = sorted(unique.values(), key=lambda d: (d.name.lower(), d.version))
    return Contents(tuple(ordered), system_packages(packages, status), tuple(unread))
