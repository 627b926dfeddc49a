"""Push images to (and fetch from) a registry over the Registry HTTP API v2, no daemon.

Push is resumable by construction: every blob is checked with HEAD first, so a run after
an interruption uploads only what is missing. A blob missing from the target repository
that this host pushed to another repository of the same registry is mounted from there
instead of uploaded (`BlobLocations`). Requests are bounded (`timeouts`) and retried with
backoff on connection errors, 429 and 5xx (`retry_policy`). Credentials come from
PYDEPLOY_REGISTRY_USERNAME/PYDEPLOY_REGISTRY_PASSWORD, else from the Docker config file
(credHelpers, credsStore, auths); they never appear in messages or reprs.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
import requests.adapters
from docker import auth as docker_auth
from docker.credentials import PROGRAM_PREFIX
from urllib3.util.retry import Retry

from pydeploy import atomic
from pydeploy.errors import ConfigError, PublishError, RegistryAuthError
from pydeploy.oci.blobs import sha256_digest
from pydeploy.oci.config import MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST
from pydeploy.oci.image import Image
from pydeploy.oci.index import ImageIndex
from pydeploy.plan.references import HUB_NAMES, Reference, parse_reference, registry_host

_ENV_USER = "PYDEPLOY_REGISTRY_USERNAME"
_ENV_PASSWORD = "PYDEPLOY_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a secret
_ENV_INSECURE = "PYDEPLOY_INSECURE_REGISTRIES"
_ENV_TIMEOUT = "PYDEPLOY_REGISTRY_TIMEOUT"
HELPER_TIMEOUT = 60.0  # seconds a credential helper may take to answer `get`
# (connect, read) seconds. The read bound is on silence: an upload streams its body, and
# only the registry's answer after the last byte (digest check, storage move) is waited for.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
# Retried: connection errors, and these answers, with exponential backoff (0, 1, 2, 4 s).
# Every method this client sends can be repeated safely: HEAD/GET read, a PUT stores the
# same bytes under the same digest or tag, and a POST opens an upload session or a mount
# (a repeat only leaves an unused session, which the registry expires) or asks for a token.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_METHODS = frozenset({"HEAD", "GET", "PUT", "POST"})
_READ_RETRIES = 2  # a registry that went silent gets 3 chances in all
_RETRY_AFTER_MAX = 30.0  # a registry's Retry-After is obeyed up to this
_CHUNK = 1 << 20
PARALLEL_BLOBS = 4  # blobs a push checks and uploads at once
_ACCEPT_MANIFESTS = ", ".join(
    (
        MEDIA_TYPE_MANIFEST,
        MEDIA_TYPE_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


def _is_loopback(host: str) -> bool:
    """localhost and all of 127.0.0.0/8 and ::1, which the engine also treats as insecure."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_scheme(registry: str, environ: Mapping[str, str] | None = None) -> str:
    """http for loopback registries and those listed in PYDEPLOY_INSECURE_REGISTRIES."""
    env = os.environ if environ is None else environ
    insecure = {x.strip() for x in env.get(_ENV_INSECURE, "").split(",") if x.strip()}
    host = registry_host(registry)
    if _is_loopback(host) or registry in insecure or host in insecure:
        return "http"
    return "https"


def timeouts(environ: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(connect, read) seconds; PYDEPLOY_REGISTRY_TIMEOUT overrides the read bound (a
    registry whose storage takes minutes to accept a large layer)."""
    env = os.environ if environ is None else environ
    text = env.get(_ENV_TIMEOUT, "").strip()
    if not text:
        return CONNECT_TIMEOUT, READ_TIMEOUT
    try:
        read = float(text)
    except ValueError:
        read = 0.0
    if not 0 < read < float("inf"):
        raise ConfigError(
            f"{_ENV_TIMEOUT}={text!r} is not a positive number of seconds.",
            hint=f"Set it to e.g. 300, or unset it for the default {READ_TIMEOUT:g} s.",
        )
    return CONNECT_TIMEOUT, read


class _Retry(Retry):
    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), _RETRY_AFTER_MAX)


def retry_policy() -> Retry:
    """The urllib3 retry policy mounted on the client's session."""
    return _Retry(
        total=6,
        connect=3,
        read=_READ_RETRIES,
        status=3,
        other=0,
        allowed_methods=RETRY_METHODS,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=0.5,
        backoff_max=8.0,
        raise_on_status=False,  # the last answer reaches the caller, which names it
        respect_retry_after_header=True,
    )


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """Registry credentials; `source` says where they came from (for messages)."""

    username: str = field(repr=False)
    password: str = field(repr=False)
    source: str
    identity_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class CredentialLookup:
    """The outcome of a lookup: credentials if found, and notes on what was tried."""

    credentials: Credentials | None
    notes: tuple[str, ...] = ()


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _matches(key: str, registry: str) -> bool:
    """A Docker config key (`https://index.docker.io/v1/`, `http://host:5000`) names
    `registry`, Docker Hub under any of its names."""
    host = docker_auth.convert_to_hostname(key)
    return host == registry or (registry in HUB_NAMES and host in HUB_NAMES)


def find_credentials(  # noqa: PLR0911 - one return per source, in Docker's lookup order
    registry: str, environ: Mapping[str, str] | None = None
) -> CredentialLookup:
    """Env vars first, then the Docker config: credHelpers[host], credsStore, auths[host].

    Not `docker.auth.resolve_authconfig`, which asks credHelpers[host] *or* credsStore
    (never the store after a helper miss), matches credHelpers keys exactly, drops an
    auths entry's plain username/password (and all but an identitytoken), raises on a
    malformed entry, and finds the file via os.environ rather than `environ`. Its pieces
    that do the same job are used: key to host, `auth` decoding, the Hub's config key."""
    env = os.environ if environ is None else environ
    if env.get(_ENV_USER) and env.get(_ENV_PASSWORD):
        return CredentialLookup(
            Credentials(env[_ENV_USER], env[_ENV_PASSWORD], f"{_ENV_USER}/{_ENV_PASSWORD}")
        )
    path = docker_config_path(env)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return CredentialLookup(None, (f"no {path}",))
    except (OSError, ValueError) as exc:
        return CredentialLookup(None, (f"{path} is unreadable ({type(exc).__name__})",))
    if not isinstance(config, dict):
        return CredentialLookup(None, (f"{path} is not a JSON object",))
    notes: list[str] = []
    server = docker_auth.INDEX_URL if registry in HUB_NAMES else registry
    helpers = config.get("credHelpers") or {}
    helper = next((v for k, v in helpers.items() if _matches(k, registry)), None)
    for name in (helper, config.get("credsStore")):
        if isinstance(name, str) and name:
            found = _from_helper(name, server, env, notes)
            if found is not None:
                return CredentialLookup(found, tuple(notes))
    auths = config.get("auths") or {}
    entry = next((v for k, v in auths.items() if _matches(k, registry)), None)
    if isinstance(entry, dict):
        found = _from_auth_entry(entry, f"{path} (auths)")
        if found is not None:
            return CredentialLookup(found, tuple(notes))
    notes.append(f"no entry for {registry} in {path}")
    return CredentialLookup(None, tuple(notes))


def _from_auth_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    token = entry.get("identitytoken") or ""
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:  # base64 of `user:password`
            user, password = docker_auth.decode_auth(entry["auth"])
        except ValueError:  # bad base64, no colon, not UTF-8: the entry is unusable
            return None
        return Credentials(user, password, source, identity_token=token)
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"], source, identity_token=token)
    if token:
        return Credentials("", "", source, identity_token=token)
    return None


def _from_helper(
    name: str, server: str, env: Mapping[str, str], notes: list[str]
) -> Credentials | None:
    """Ask `docker-credential-<name> get` for `server`'s credentials.

    Not `docker.credentials.Store`: it waits on a helper without a bound (a keychain or
    GPG prompt nobody answers would hang the push), warns through `warnings` when the
    helper is missing (only the cli prints), quotes the helper's output in its errors
    (which may echo a secret), and finds the program on os.environ's PATH, not `env`'s."""
    program = f"{PROGRAM_PREFIX}{name}"
    try:
        result = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except FileNotFoundError:
        notes.append(f"the credential helper {program} is not on PATH")
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"the credential helper {program} failed ({type(exc).__name__})")
        return None
    if result.returncode != 0:
        # "credentials not found" is the helper's normal answer for an unknown server;
        # its output is never quoted, in case a helper echoes something sensitive.
        notes.append(f"{program} has no credentials for {server}")
        return None
    try:
        answer = json.loads(result.stdout)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        notes.append(f"{program} gave an answer that is not credentials JSON")
        return None
    if user == docker_auth.TOKEN_USERNAME:  # an identity (refresh) token, not a password
        return Credentials("", "", program, identity_token=secret)
    return Credentials(user, secret, program)


# --------------------------------------------------------------------------- auth challenge

_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (
            re.sub(r"\\(.)", r"\1", m.group(2)) if m.group(2) is not None else m.group(3)
        )
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class PushEvent:
    """Progress of a push: `kind` is "exists", "uploading", "uploaded", "mounted" or
    "manifest"."""

    kind: str
    digest: str
    size: int


PushProgress = Callable[[PushEvent], None]
_Body = Callable[[], "bytes | IO[bytes]"]


def _is_timeout(exc: BaseException) -> bool:
    """A read or connect timeout, also when retries wrapped it (MaxRetryError)."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return "timed out" in str(reason or "").lower()


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if match:
        return match.group(0).strip()
    if isinstance(exc, requests.exceptions.Timeout):
        return "the connection timed out"
    return type(exc).__name__


class RegistryClient:
    """One repository on one registry; keeps the token between requests."""

    def __init__(
        self,
        reference: Reference,
        *,
        push: bool = False,
        session: requests.Session | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.ref = reference
        self._env = os.environ if environ is None else environ
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._timeouts = timeouts(self._env)
        if self._owns_session:
            retrying = requests.adapters.HTTPAdapter(max_retries=retry_policy())
            for prefix in ("http://", "https://"):
                self._session.mount(prefix, retrying)
        scheme = registry_scheme(reference.registry, self._env)
        self._root = f"{scheme}://{reference.registry}/v2/"
        self._actions = "pull,push" if push else "pull"
        self._authorization: str | None = None
        self._lookup: CredentialLookup | None = None

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing

    def url(self, suffix: str) -> str:
        return f"{self._root}{self.ref.repository}/{suffix}"

    def _credentials(self) -> CredentialLookup:
        if self._lookup is None:
            self._lookup = find_credentials(self.ref.registry, self._env)
        return self._lookup

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, url, timeout=self._timeouts, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise PublishError(
                f"TLS to registry {self.ref.registry} failed: {_short_reason(exc)}.",
                hint=f"If it uses a private CA, point REQUESTS_CA_BUNDLE at the CA bundle; if "
                f"it speaks plain HTTP, set {_ENV_INSECURE}={self.ref.registry}.",
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            parts = urlsplit(url)
            host = parts.netloc
            # Plain HTTP was already used (loopback, or listed): the hint would not help.
            hint = (
                f"For an insecure (plain-HTTP) registry set {_ENV_INSECURE}={host}."
                if parts.scheme == "https"
                else None
            )
            if _is_timeout(exc):
                raise PublishError(
                    f"registry {host} did not answer {method} {parts.path} within "
                    f"{self._timeouts[1]:g} s (tried {1 + _READ_RETRIES} times).",
                    hint=f"If it is slow to store large layers, raise {_ENV_TIMEOUT} (seconds)."
                    + (f" {hint}" if hint else ""),
                ) from exc
            raise PublishError(
                f"registry {host} is unreachable: {_short_reason(exc)}; is it running?",
                hint=hint,
            ) from exc

    def request(
        self,
        method: str,
        url: str,
        *,
        body: _Body | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send, answering one 401 challenge (Basic or Bearer) by authenticating and
        resending. `body` is a factory so a streamed upload can be replayed."""
        for attempt in range(2):
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            data = body() if body is not None else None
            try:
                response = self._send(method, url, data=data, headers=sent, stream=stream)
            finally:
                if data is not None and not isinstance(data, bytes):
                    data.close()
            if response.status_code == 401 and attempt == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                if self._authenticate(challenge):
                    continue
            if response.status_code in {401, 403}:
                response.close()
                raise self._auth_error(response.status_code)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticate(self, challenge: str) -> bool:
        scheme, params = parse_www_authenticate(challenge)
        creds = self._credentials().credentials
        if scheme == "basic":
            if creds is None or not creds.username:
                return False
            pair = f"{creds.username}:{creds.password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode()
            return True
        if scheme == "bearer" and params.get("realm"):
            token = self._fetch_token(params, creds)
            self._authorization = f"Bearer {token}"
            return True
        return False

    def _fetch_token(self, params: Mapping[str, str], creds: Credentials | None) -> str:
        ours = f"repository:{self.ref.repository}:{self._actions}"
        scopes = [s for s in (params.get("scope"), ours) if s]
        query: dict[str, Any] = {"scope": list(dict.fromkeys(scopes))}
        if params.get("service"):
            query["service"] = params["service"]
        realm = params["realm"]
        if creds is not None and creds.identity_token:
            form = {**query, "grant_type": "refresh_token", "client_id": "pydeploy",
                    "refresh_token": creds.identity_token}  # fmt: skip
            response = self._send("POST", realm, data=form)
        else:
            auth = (creds.username, creds.password) if creds and creds.username else None
            response = self._send("GET", realm, params=query, auth=auth)
        if response.status_code in {401, 403}:
            raise self._auth_error(response.status_code)
        if response.status_code != 200:
            raise self._failure(response, "issuing a token")
        try:
            answer = response.json()
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PublishError(f"the token service of {self.ref.registry} returned no token.")
        return token

    def _auth_error(self, status: int) -> RegistryAuthError:
        lookup = self._credentials()
        registry = self.ref.registry
        how = (
            f"Run `docker login {registry}` or set {_ENV_USER} and {_ENV_PASSWORD} "
            f"(credentials are read from those variables first, then from "
            f"{docker_config_path(self._env)})."
        )
        if lookup.credentials is None:
            tried = "; ".join(lookup.notes)
            return RegistryAuthError(
                f"registry {registry} requires credentials for {self.ref.repository} "
                f"(HTTP {status}) and none were found ({tried}).",
                hint=how,
            )
        return RegistryAuthError(
            f"registry {registry} refused the credentials from {lookup.credentials.source} "
            f"for {self._actions} on {self.ref.repository} (HTTP {status}).",
            hint=how,
        )

    def _failure(self, response: requests.Response, action: str) -> PublishError:
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
        except (ValueError, AttributeError):
            detail = response.text[:200].strip()
        finally:
            response.close()
        suffix = f": {detail}" if detail else ""
        return PublishError(
            f"registry {self.ref.registry} answered HTTP {response.status_code} while "
            f"{action} for {self.ref.repository}{suffix}"
        )

    # -- blobs and manifests

    def blob_exists(self, digest: str) -> bool:
        response = self.request("HEAD", self.url(f"blobs/{digest}"))
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._failure(response, f"checking blob {digest}")

    def upload_blob(
        self, digest: str, size: int, body: _Body, *, mount_from: str | None = None
    ) -> bool:
        """Mount the blob from repository `mount_from` of this registry when given, else
        (or when the registry does not mount it) a monolithic upload: POST for a session,
        then one PUT with the whole blob. True when it was mounted."""
        query = f"?{urlencode({'mount': digest, 'from': mount_from})}" if mount_from else ""
        start = self.request(
            "POST", self.url(f"blobs/uploads/{query}"), headers={"Content-Length": "0"}
        )
        if mount_from and start.status_code == 201:
            start.close()
            return True
        # 202: a session opened (for a failed mount too: the spec says upload into it).
        if start.status_code != 202:
            raise self._failure(start, f"starting the upload of {digest}")
        start.close()
        location = start.headers.get("Location")
        if not location:
            raise PublishError(f"registry {self.ref.registry} gave no upload location")
        parts = urlsplit(urljoin(start.url, location))
        query = f"{parts.query}&" if parts.query else ""
        target = urlunsplit(parts._replace(query=query + urlencode({"digest": digest})))
        done = self.request(
            "PUT",
            target,
            body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        # A 404 after a retried PUT: the first attempt completed (and closed the session)
        # but its answer was lost.
        if done.status_code not in {201, 204} and not (
            done.status_code == 404 and self.blob_exists(digest)
        ):
            raise self._failure(done, f"uploading blob {digest}")
        done.close()
        return False

    def put_manifest(self, manifest: bytes, media_type: str) -> str | None:
        return self.put_manifest_headers(manifest, media_type).get("Docker-Content-Digest")

    def put_manifest_headers(self, manifest: bytes, media_type: str) -> Mapping[str, str]:
        """PUT the manifest; the answer's headers (an artifact's push reads OCI-Subject)."""
        response = self.request(
            "PUT",
            self.url(f"manifests/{self.ref.target}"),
            body=lambda: manifest,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in {200, 201, 202}:
            raise self._failure(response, "storing the manifest")
        response.close()
        return response.headers

    def get_manifest(self) -> tuple[bytes, str]:
        response = self.request(
            "GET", self.url(f"manifests/{self.ref.target}"), headers={"Accept": _ACCEPT_MANIFESTS}
        )
        if response.status_code != 200:
            raise self._failure(response, f"fetching the manifest {self.ref.target}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.content, media_type

    def find_manifest(self, accept: str = MEDIA_TYPE_MANIFEST) -> bytes | None:
        """The OCI manifest (or, with `accept`, index) `ref.target` names, or None when the
        registry has none there (the registry cache's lookups and the referrers tag: a
        miss is the common answer, not an error)."""
        response = self.request(
            "GET", self.url(f"manifests/{self.ref.target}"), headers={"Accept": accept}
        )
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:
            raise self._failure(response, f"fetching the manifest {self.ref.target}")
        return response.content

    def download_blob(self, digest: str, dest: Path) -> int:
        response = self.request("GET", self.url(f"blobs/{digest}"), stream=True)
        if response.status_code != 200:
            raise self._failure(response, f"fetching blob {digest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        hasher, size = hashlib.sha256(), 0
        with atomic.replacing(dest) as out, response:
            for chunk in response.iter_content(_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
                out.write(chunk)
            if f"sha256:{hasher.hexdigest()}" != digest:
                raise PublishError(
                    f"blob {digest} from {self.ref.registry} arrived with different content; "
                    f"nothing was written to {dest}."
                )
        return size


# --------------------------------------------------------------------------- blob locations


class BlobLocations:
    """Which repositories of each registry hold a blob, as far as pushes from this host
    know: `<cache>/registry-blobs.json`, {registry: {digest: [repository, ...]}}, newest
    first. The only source for a mount: a registry does not say where else it holds a
    blob, and the base image's own blobs are no help (pydeploy recompresses base layers,
    so their digests are its own). A hint, never trusted: a stale entry costs one mount
    attempt that the registry answers with an ordinary upload session. Written by atomic
    replace; two pushes finishing at once may lose one's record, which costs an upload."""

    FILE = "registry-blobs.json"
    _PER_BLOB = 4  # repositories remembered per blob
    _PER_REGISTRY = 5000  # blobs remembered per registry, the most recently pushed

    def __init__(self, root: Path) -> None:
        self.path = root / self.FILE

    def _read(self) -> dict[str, dict[str, list[str]]]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(document, dict):
            return {}
        return {
            str(reg): {str(d): [str(r) for r in repos] for d, repos in blobs.items()
                       if isinstance(repos, list)}
            for reg, blobs in document.items()
            if isinstance(blobs, dict)
        }  # fmt: skip

    def sources(self, registry: str, digest: str) -> list[str]:
        return self._read().get(registry, {}).get(digest, [])

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        """Remember that `repository` now holds `digests`. Never fails a push."""
        with contextlib.suppress(OSError):
            document = self._read()
            blobs = document.setdefault(registry, {})
            for digest in digests:
                repos = [repository, *(r for r in blobs.pop(digest, []) if r != repository)]
                blobs[digest] = repos[: self._PER_BLOB]  # re-inserted: now the newest
            document[registry] = dict(list(blobs.items())[-self._PER_REGISTRY :])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.path, json.dumps(document))


# --------------------------------------------------------------------------- entry points


def _as_reference(reference: str | Reference) -> Reference:
    return reference if isinstance(reference, Reference) else parse_reference(reference)


# Downloads blobs a registry cache restore left in the registry (RegistryCache.fetch_missing).
Fetch = Callable[[list[str]], None]


def _file_body(path: Path, fetch: Fetch | None = None) -> _Body:
    """The blob at `path`, fetched first when a restore left it in the registry and the
    push needs its bytes after all (its mount was refused, or another registry)."""

    def open_file() -> IO[bytes]:
        if fetch is not None and not path.exists():
            fetch([f"sha256:{path.name}"])
        return path.open("rb")

    return open_file


def push(  # noqa: PLR0913 - keyword-only options, each with a default
    image: Image,
    reference: str | Reference,
    *,
    progress: PushProgress | None = None,
    session: requests.Session | None = None,
    environ: Mapping[str, str] | None = None,
    locations: BlobLocations | None = None,
    fetch: Fetch | None = None,
) -> str:
    """Push `image` (layers, config, manifest) to `reference`; returns the manifest digest.
    Blobs the registry already has are skipped, so a re-run completes an interrupted push;
    blobs that `locations` says another repository of the registry holds are mounted."""
    ref = _as_reference(reference)
    digest = sha256_digest(image.registry_manifest())
    if ref.digest and ref.digest != digest:
        raise PublishError(
            f"{ref} pins digest {ref.digest}, but the image's manifest is {digest}.",
            hint="Push by tag instead, or pin the digest pydeploy reports.",
        )
    with RegistryClient(ref, push=True, session=session, environ=environ) as client:
        return _push(client, image, ref, progress or (lambda _event: None), locations, fetch)


def _push(  # noqa: PLR0913, PLR0917 - the client, what goes where, and the hints
    client: RegistryClient,
    image: Image,
    ref: Reference,
    report: PushProgress,
    locations: BlobLocations | None,
    fetch: Fetch | None = None,
) -> str:
    blobs: dict[str, tuple[int, _Body]] = {}
    for layer in image.layers:
        blobs[layer.digest] = (layer.size, _file_body(image.store.path(layer.digest), fetch))
    blobs[image.config_digest] = (len(image.config), lambda: image.config)
    _send_blobs(client, ref, blobs, report, locations)
    manifest = image.registry_manifest()
    digest = sha256_digest(manifest)
    returned = client.put_manifest(manifest, MEDIA_TYPE_MANIFEST)
    if returned and returned != digest:
        raise PublishError(
            f"registry {ref.registry} stored the manifest of {ref} as {returned}, not as "
            f"{digest}; the registry rewrote it, so the pushed image is not "
            f"the one pydeploy built."
        )
    report(PushEvent("manifest", digest, len(manifest)))
    if locations is not None:
        locations.record(ref.registry, ref.repository, blobs)
    return digest


def _send_blobs(
    client: RegistryClient,
    ref: Reference,
    blobs: Mapping[str, tuple[int, _Body]],
    report: PushProgress,
    locations: BlobLocations | None,
) -> None:
    """Every blob into `ref`'s repository: skipped when there, mounted when `locations`
    knows another repository of the registry holding it, else uploaded."""
    lock = threading.Lock()

    def reported(event: PushEvent) -> None:
        with lock:  # callers count events: one at a time
            report(event)

    def send(digest: str, size: int, body: _Body) -> None:
        if client.blob_exists(digest):
            reported(PushEvent("exists", digest, size))
            return
        others = [r for r in (locations.sources(ref.registry, digest) if locations else [])
                  if r != ref.repository]  # fmt: skip
        # One mount attempt: a failed one opens a session that the upload then uses.
        source = others[0] if others else None
        reported(PushEvent("uploading", digest, size))
        mounted = client.upload_blob(digest, size, body, mount_from=source)
        reported(PushEvent("mounted" if mounted else "uploaded", digest, size))

    items = [(digest, size, body) for digest, (size, body) in blobs.items()]
    # The first blob alone answers the registry's auth challenge; the rest reuse the token.
    send(*items[0])
    _in_parallel(send, items[1:])


def push_artifact(
    reference: str | Reference,
    manifest: bytes,
    blobs: Mapping[str, tuple[int, Path | bytes]],
    *,
    locations: BlobLocations | None = None,
    fetch: Fetch | None = None,
) -> Mapping[str, str]:
    """Push an OCI manifest (an artifact: the registry cache's records, an SBOM) and the
    blobs it names to `reference`; returns the registry's answer headers (a referrer's
    push reads OCI-Subject from them)."""
    ref = _as_reference(reference)
    bodies: dict[str, tuple[int, _Body]] = {
        digest: (size, _file_body(src, fetch) if isinstance(src, Path) else _bytes_body(src))
        for digest, (size, src) in blobs.items()
    }
    with RegistryClient(ref, push=True) as client:
        _send_blobs(client, ref, bodies, lambda _event: None, locations)
        headers = client.put_manifest_headers(manifest, MEDIA_TYPE_MANIFEST)
    if locations is not None:
        locations.record(ref.registry, ref.repository, bodies)
    return headers


def _bytes_body(data: bytes) -> _Body:
    return lambda: data


def push_index(
    index: ImageIndex,
    reference: str | Reference,
    *,
    progress: PushProgress | None = None,
    locations: BlobLocations | None = None,
) -> str:
    """Push each platform's image by its digest, then the index under `reference`;
    returns the index's digest. Shared blobs (the app and launcher layers) are sent once:
    the second image finds them there."""
    ref = _as_reference(reference)
    report = progress or (lambda _event: None)
    for image in index.images:
        pinned = dataclasses.replace(ref, tag=None, digest=image.registry_manifest_digest())
        with RegistryClient(pinned, push=True) as client:
            _push(client, image, pinned, report, locations)
    with RegistryClient(ref, push=True) as client:
        returned = client.put_manifest(index.data, MEDIA_TYPE_INDEX)
    if returned and returned != index.digest:
        raise PublishError(
            f"registry {ref.registry} stored the index of {ref} as {returned}, not as "
            f"{index.digest}; the registry rewrote it."
        )
    report(PushEvent("manifest", index.digest, len(index.data)))
    return index.digest


def _in_parallel(
    send: Callable[[str, int, _Body], None], items: list[tuple[str, int, _Body]]
) -> None:
    """`send` each blob, PARALLEL_BLOBS at a time: a push of several dependency layers is
    mostly round trips (HEAD, POST, PUT) that need not wait for each other. The first
    failure is raised once the blobs under way end; the ones not started are dropped."""
    with ThreadPoolExecutor(max_workers=PARALLEL_BLOBS, thread_name_prefix="push") as pool:
        futures = [pool.submit(send, *item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()  # the ones not started; the pool waits for the others
    for future in futures:
        if not future.cancelled():
            future.result()


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.data)
        return document


def fetch_manifest(
    reference: str | Reference,
    *,
    session: requests.Session | None = None,
    environ: Mapping[str, str] | None = None,
) -> FetchedManifest:
    """The manifest (or index) `reference` names, verified when pinned by digest."""
    ref = _as_reference(reference)
    with RegistryClient(ref, session=session, environ=environ) as client:
        data, media_type = client.get_manifest()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if ref.digest and digest != ref.digest:
        raise PublishError(f"registry {ref.registry} returned a manifest that is not {ref.digest}")
    return FetchedManifest(data, media_type, digest)


def fetch_blob(
    reference: str | Reference,
    digest: str,
    dest: Path,
    *,
    session: requests.Session | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Download blob `digest` of `reference`'s repository to `dest` (atomically, verified);
    returns its size."""
    ref = _as_reference(reference)
    with RegistryClient(ref, session=session, environ=environ) as client:
        return client.download_blob(digest, dest)
