"""Which app-layer files look like they hold a secret, by content (Yelp's detect-secrets).

Only the detectors that recognise a secret by its shape (private keys, cloud and service
tokens, passwords in URLs) run: the entropy and keyword detectors flag hashes, lock files
and ordinary code far too often for a build warning. Files over SCAN_LIMIT bytes or with a
NUL byte near the start (binaries, images, archives) are not read. Results are cached by
path, size and mtime, so an unchanged file is never scanned twice and a code-only rebuild
scans only what changed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydeploy.cachekeys import INDEX_SECRET_SCAN, SECRET_SCAN_RECIPE
from pydeploy.oci.blobs import BlobStore

SCAN_LIMIT = 1024 * 1024
_PROBE = 8192
PLUGINS = (
    "AWSKeyDetector",
    "ArtifactoryDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)
# detect-secrets keeps its settings in a process-wide singleton; `build --all` builds in
# threads.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the project root
    kind: str  # e.g. "Private Key"; never the secret itself
    line: int


def scan(root: Path, files: Sequence[str], *, store: BlobStore | None = None) -> list[Finding]:
    """Findings for the project-relative `files` under `root`, in path order."""
    cache_key = hashlib.sha256(f"{SECRET_SCAN_RECIPE}\0{root.resolve()}".encode()).hexdigest()
    known = _cached(store.read_index(INDEX_SECRET_SCAN, cache_key)) if store is not None else {}
    current: dict[str, _Entry] = {}
    todo: list[str] = []
    for rel in sorted(files):
        path = root / rel
        try:
            info = path.stat()
        except OSError:
            continue
        stamp = (info.st_size, info.st_mtime_ns)
        previous = known.get(rel)
        if previous is not None and previous.stamp == stamp:
            current[rel] = previous
            continue
        current[rel] = _Entry(stamp, ())
        if info.st_size <= SCAN_LIMIT and _is_text(path):
            todo.append(rel)
    for rel, found in _detect(root, todo).items():
        current[rel] = _Entry(current[rel].stamp, found)
    if store is not None and (todo or current.keys() != known.keys()):
        document = {
            rel: {"size": e.stamp[0], "mtime_ns": e.stamp[1], "found": [list(f) for f in e.found]}
            for rel, e in current.items()
        }
        store.write_index(INDEX_SECRET_SCAN, cache_key, document)
    return [Finding(rel, kind, line) for rel, e in current.items() for kind, line in e.found]


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[int, int]  # size, mtime_ns
    found: tuple[tuple[str, int], ...]


def _cached(document: object) -> dict[str, _Entry]:
    """The cache index read back; a malformed one is a miss, never an error."""
    if not isinstance(document, dict):
        return {}
    try:
        return {
            str(rel): _Entry(
                (int(doc["size"]), int(doc["mtime_ns"])),
                tuple((str(kind), int(line)) for kind, line in doc["found"]),
            )
            for rel, doc in document.items()
        }
    except (KeyError, TypeError, ValueError):
        return {}


def _is_text(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return b"\0" not in handle.read(_PROBE)
    except OSError:
        return False


def _detect(root: Path, todo: list[str]) -> dict[str, tuple[tuple[str, int], ...]]:
    """(kind, line) pairs per file, with only PLUGINS enabled."""
    if not todo:
        return {}
    # Imported on first use: it costs ~0.2 s.
    from detect_secrets.core.scan import scan_file  # noqa: PLC0415
    from detect_secrets.settings import transient_settings  # noqa: PLC0415

    # Its import reroutes all warnings to logging, and it logs unreadable files itself.
    logging.captureWarnings(False)
    logging.getLogger("detect-secrets").setLevel(logging.CRITICAL)
    results: dict[str, tuple[tuple[str, int], ...]] = {}
    with _LOCK, transient_settings({"plugins_used": [{"name": n} for n in PLUGINS]}):
        for rel in todo:
            found = {(str(s.type), int(s.line_number)) for s in scan_file(str(root / rel))}
            results[rel] = tuple(sorted(found, key=lambda f: (f[1], f[0])))
    return results


def describe(findings: Sequence[Finding]) -> list[str]:
    """One warning per file: where, and what kind of secret (never its value)."""
    by_file: dict[str, list[Finding]] = {}
    for finding in findings:
        by_file.setdefault(finding.path, []).append(finding)
    lines = []
    for rel, found in by_file.items():
        what = ", ".join(f"{f.kind} on line {f.line}" for f in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        lines.append(
            f"{rel} looks like it holds a secret ({what}{more}) and goes into the app layer. "
            "Move the secret into an environment variable or a mounted file and exclude the "
            "file (tool.pydeploy.exclude), or mark a false positive with a "
            "`pragma: allowlist secret` comment on its line."
        )
    return lines
