"""An in-memory engine for the builder stage's unit tests: it satisfies StageEngine, so
stage.py runs against it unchanged. It proves control flow only (which container runs in
which image, which volume is claimed, reused or removed, what is left behind); no program
runs, and the integration tests keep proving that images work.

Containers are scripted: when the stage starts one, the handler registered for its role
(`probe`, `apt-download`, `apt-install`, `install`, `project`, `check` (in the runtime
image); the shared-library check's `scan` and `which`) answers with the lines it prints
and its exit code, and may write into the volumes mounted into it, as the real builder
script does. The defaults succeed: the probe finds Python 3.12, an install writes its
marker into the venv volume, the check finds a WSGI app.

Like the real engine: mounting a missing volume creates it without labels, a volume a
container uses cannot be removed, and creating an existing volume leaves it unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from pydeploy import cachekeys
from pydeploy.builder import stage
from pydeploy.engine import owners
from pydeploy.engine.types import (
    CommitSettings,
    Confinement,
    ImageFacts,
    ImageRef,
    Mount,
    Outcome,
    RunResult,
)
from pydeploy.errors import BaseImageError, EngineError
from pydeploy.payload.builder_script import MARK
from pydeploy.plan.planner import VENV

BASE = "local/base:1"
BASE_ID = "sha256:" + "b" * 64
PYTHON = {
    "executable": "/usr/local/bin/python3",
    "version": "3.12.1",
    "site_packages": "lib/python3.12/site-packages",
    "headers": True,
}


# --- what a scripted container says -------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    lines: Sequence[str] = ()
    exit_code: int = 0
    oom_killed: bool = False


def result(payload: object) -> str:
    return f"{MARK}result {json.dumps(payload, sort_keys=True)}"


def failed(step: str) -> str:
    return f"{MARK}failed {step}"


def compilers(*names: str) -> str:
    """A light job's report that its builds ran these stand-in compilers."""
    return f"{MARK}compilers {' '.join(names)}"


Handler = Callable[["FakeContainer"], Reply]


# --- containers ---------------------------------------------------------------------------


@dataclass
class FakeVolume:
    labels: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)  # path inside the volume -> bytes


class FakeContainer:
    """A container the stage created (a StageBox), remembered after its removal."""

    def __init__(  # noqa: PLR0913 - what StageEngine.container takes, plus its engine and pin
        self,
        engine: FakeEngine,
        image: str,
        argv: list[str],
        *,
        env: dict[str, str] | None,
        mounts: Iterable[Mount],
        network: str,
        stdin: bytes | None,
        pinned: bool = False,
        confine: Confinement | None = None,
    ) -> None:
        self.engine = engine
        self.ident = f"c{len(engine.containers) + 1}"
        self.image, self.argv, self.env = image, list(argv), dict(env or {})
        self.mounts, self.network, self.stdin = tuple(mounts), network, stdin
        self.pinned = pinned
        self.confine = confine
        self.files: dict[str, bytes] = {}  # absolute path -> what put_files/put_archive sent
        self.changed: list[tuple[str, str]] = []  # what `changes` (docker diff) reports
        self.started = pinned
        self.stopped_early = False  # follow_until returned before the exit was awaited
        self.removed = False
        for mount in self.mounts:
            engine.volumes.setdefault(mount.source, FakeVolume({}))

    def __repr__(self) -> str:
        return f"<{self.role} in {self.image}{' removed' if self.removed else ''}>"

    @property
    def id(self) -> str:
        return self.ident

    def changes(self) -> list[tuple[str, str]]:
        return list(self.changed)

    @property
    def role(self) -> str:
        if self.pinned:
            return "pin"
        if len(self.argv) > 3 and self.argv[1] == "-c" and self.argv[3] == "check-app":
            return "check"
        text = " ".join(self.argv)
        signs = {
            "probe": "probe",
            "--download-only": "apt-download",
            "--no-download": "apt-install",
        }
        found = next((role for sign, role in signs.items() if sign in text), None)
        # The builder script's jobs, and elfdeps.py's `scan` and `which`.
        jobs = {"install", "project", "scan", "which"}
        if found is None and len(self.argv) > 2 and self.argv[2] in jobs:
            found = self.argv[2]
        return found or "idle"  # never started: only read from (marker, export)

    @property
    def job(self) -> dict[str, Any]:
        """The job document: a file for builder jobs, the argument of the app check."""
        text = self.argv[4] if self.role == "check" else self.files[stage.JOB]
        document: dict[str, Any] = json.loads(text)
        return document

    def volume(self, target: str) -> FakeVolume:
        """The volume mounted at `target`."""
        mount = next(m for m in self.mounts if m.target == target)
        return self.engine.volumes[mount.source]

    def _locate(self, path: str) -> tuple[FakeVolume | None, str]:
        for mount in self.mounts:
            if path.startswith(mount.target + "/"):
                return self.engine.volumes.get(mount.source), path[len(mount.target) + 1 :]
        return None, path

    # --- StageBox ---------------------------------------------------------------------

    def put_files(self, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:  # noqa: ARG002 - no modes kept
        for name, data in files.items():
            path = f"{directory.rstrip('/')}/{name}"
            volume, inner = self._locate(path)
            if volume is not None:
                volume.files[inner] = data
            else:
                self.files[path] = data

    def put_archive(self, path: str, data: bytes | IO[bytes]) -> None:
        raw = data if isinstance(data, bytes) else data.read()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    self.files[f"{path.rstrip('/')}/{member.name}"] = handle.read()

    def get_archive(self, path: str) -> Iterator[bytes]:
        volume, inner = self._locate(path + "/")
        top = path.rstrip("/").rsplit("/", 1)[-1]
        found = (
            {name: data for name, data in volume.files.items() if name.startswith(inner)}
            if volume is not None
            else {
                name[len(path) + 1 :]: data
                for name, data in self.files.items()
                if name.startswith(path + "/")
            }
        )
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in sorted(found.items()):
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        yield buffer.getvalue()

    def read_file(self, path: str) -> bytes | None:
        volume, inner = self._locate(path)
        if volume is not None:
            return volume.files.get(inner)
        return self.files.get(path)

    def follow(self, on_line: Callable[[str], None]) -> Outcome:
        outcome = self.follow_until(on_line, lambda: False)
        assert outcome is not None
        return outcome

    def follow_until(
        self, on_line: Callable[[str], None], done: Callable[[], bool]
    ) -> Outcome | None:
        assert not self.removed, "a removed container was started"
        self.started = True
        handler = self.engine.handlers.get(self.role)
        if handler is None:
            raise AssertionError(f"no handler for a {self.role} container: {self.argv}")
        reply = handler(self)
        for line in reply.lines:
            on_line(line)
            if done():
                self.stopped_early = True
                return None
        return Outcome(reply.exit_code, reply.oom_killed)

    def commit(self, repository: str, tag: str, settings: CommitSettings) -> str:
        image_id = f"sha256:{len(self.engine.commits) + 1:064d}"
        self.engine.commits.append((f"{repository}:{tag}", settings))
        self.engine.images[f"{repository}:{tag}"] = ImageFacts(
            image_id,
            labels=dict(settings.labels),
            env=settings.env,
            cmd=settings.cmd,
            entrypoint=settings.entrypoint,
            workdir=settings.workdir,
            user=settings.user,
        )
        return image_id


# --- the engine ---------------------------------------------------------------------------


class FakeEngine:
    """A StageEngine in memory. `others` scripts other builds: build id -> how many of
    their containers run."""

    def __init__(self, base: ImageFacts | None = None) -> None:
        self.build_id = "thisbuild000"
        self.owner = owners.this_process()
        self.images: dict[str, ImageFacts] = {
            BASE: base
            or ImageFacts(
                BASE_ID,
                labels={"org.example.base": "1"},
                env=("PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"),
                cmd=("python3",),
            )
        }
        self.volumes: dict[str, FakeVolume] = {}
        self.containers: list[FakeContainer] = []
        self.commits: list[tuple[str, CommitSettings]] = []
        self.others: dict[str, int] = {}
        self.reaped = 0
        self.removed_volumes: list[str] = []
        self._holds = 0
        self._pins: list[FakeContainer] = []
        self.handlers: dict[str, Handler] = {
            "probe": lambda _c: Reply([result(PYTHON)]),
            "apt-download": lambda _c: Reply(),
            "apt-install": lambda _c: Reply(),
            "install": installs(),
            "project": projects(),
            "check": checks({"ok": True, "kind": "wsgi", "interface": "wsgi"}),
        }

    # --- what tests read ---------------------------------------------------------------

    def started(self, role: str) -> list[FakeContainer]:
        return [c for c in self.containers if c.role == role and c.started]

    def live(self) -> list[FakeContainer]:
        return [c for c in self.containers if not c.removed]

    @property
    def pins(self) -> list[FakeContainer]:
        """The pins still held."""
        return [c for c in self._pins if not c.removed]

    def in_use(self, volume: str) -> bool:
        return any(m.source == volume for c in self.live() for m in c.mounts)

    def claim(self, volume: str, build: str, owner: owners.Owner | None, key: str) -> None:
        """Another build's claim on `volume`."""
        labels = {
            cachekeys.LABEL_VENV_KEY: key,
            cachekeys.LABEL_OWNER: build,
            cachekeys.LABEL_VENV: "1",
        }
        if owner is not None:
            labels[cachekeys.LABEL_OWNER_PROCESS] = owner.label()
        self.volumes[volume] = FakeVolume(labels)

    # --- StageEngine ---------------------------------------------------------------------

    def ensure_image(self, name: str) -> ImageRef:
        if name not in self.images:
            raise BaseImageError(f"no image {name}")
        return ImageRef(name, self.images[name].image_id, None)

    def inspect_image(self, name: str) -> ImageFacts | None:
        return self.images.get(name)

    def network_mode(self, configured: str | None) -> str:
        return configured or "bridge"

    def volume_labels(self, name: str) -> dict[str, str] | None:
        volume = self.volumes.get(name)
        return dict(volume.labels) if volume is not None else None

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.volumes.setdefault(name, FakeVolume(dict(labels or {})))

    def remove_volume(self, name: str) -> None:
        if self.in_use(name):
            raise EngineError(f"volume {name} is in use")
        if self.volumes.pop(name, None) is not None:
            self.removed_volumes.append(name)

    def remove_unused_volume(self, name: str) -> bool:
        try:
            self.remove_volume(name)
        except EngineError:
            return False
        return True

    def run(
        self,
        image: str,
        argv: list[str],
        *,
        files: dict[str, dict[str, bytes]] | None = None,
        network: str = "host",
    ) -> RunResult:
        lines: list[str] = []
        with self.container(image, argv, network=network) as box:
            for directory, content in (files or {}).items():
                box.put_files(directory, content)
            outcome = box.follow(lines.append)
        return RunResult(outcome.exit_code, "\n".join(lines), outcome.oom_killed)

    @contextlib.contextmanager
    def container(  # noqa: PLR0913 - keyword-only options, as StageEngine.container has them
        self,
        image: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        mounts: Iterable[Mount] = (),
        network: str = "host",
        stdin: bytes | None = None,
        confine: Confinement | None = None,
    ) -> Iterator[FakeContainer]:
        assert image in self.images, f"a container of an image the engine lacks: {image}"
        box = FakeContainer(
            self, image, argv, env=env, mounts=mounts, network=network, stdin=stdin, confine=confine
        )
        self.containers.append(box)
        try:
            yield box
        finally:
            box.removed = True

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if self._holds == 0:
                for pin in self._pins:
                    pin.removed = True
                self._pins = []

    def pin(self, image: str, mounts: Iterable[Mount] = ()) -> FakeContainer:
        assert image in self.images, f"a pin of an image the engine lacks: {image}"
        box = FakeContainer(
            self, image, ["pin"], env=None, mounts=mounts, network="none", stdin=b"", pinned=True
        )
        self.containers.append(box)
        self._pins.append(box)
        return box

    def unpin(self, box: Any) -> None:
        if box in self._pins:
            self._pins.remove(box)
        box.removed = True

    def containers_with_label(
        self, build_id: str | None = None, *, running_only: bool = False
    ) -> list[str]:
        build = build_id or self.build_id
        if build != self.build_id:
            return [f"{build}-{n}" for n in range(self.others.get(build, 0))]
        return [c.id for c in self.live() if c.started or not running_only]

    def reap_orphans(self) -> list[str]:
        self.reaped += 1
        return []

    def remove(self, ident: str) -> None:
        for box in self.containers:
            if box.id == ident:
                box.removed = True


# --- handlers -----------------------------------------------------------------------------


def installs(pins: Sequence[str] = ("flask==3.0.3",), *, needs_compilers: bool = False) -> Handler:
    """An install that succeeds (writing its marker into the venv volume, last, as the
    builder script does); with `needs_compilers`, a light one fails as a build that ran a
    compiler does, so the stage must move to the full builder."""

    def handler(box: FakeContainer) -> Reply:
        job = box.job
        venv = box.volume(VENV)
        venv.files["bin/python"] = b"#!"
        if needs_compilers and job["light"]:
            return Reply(
                ["error: a build tried to compile", compilers("gcc"), failed("install")], 3
            )
        marker = {
            "key": job["key"],
            "source": job["source"],
            "pins": list(pins),
            "added": [],
            "compilers": not job["light"],
        }
        venv.files[job["marker"]] = json.dumps(marker).encode()
        return Reply([f"{MARK}begin install", f"{MARK}end install 1 packages", result(marker)])

    return handler


def checks(app: dict[str, Any], *, exit_code: int = 0) -> Handler:
    """An app check (in the runtime image) that reports `app` (inspect_app's report)."""

    def handler(_box: FakeContainer) -> Reply:
        lines = [result({"app": app})] if exit_code == 0 else ["Killed"]
        return Reply(lines, exit_code)

    return handler


def projects(files: dict[str, bytes] | None = None, *, needs_compilers: bool = False) -> Handler:
    """A project build that leaves `files` in its site tree; with `needs_compilers`, a
    light one fails because the project's own build ran a compiler."""

    def handler(box: FakeContainer) -> Reply:
        if needs_compilers and box.job["light"]:
            return Reply([compilers("cc"), failed("project")], 3)
        site = "/build/project-site"
        for name, data in (files or {"demo/__init__.py": b""}).items():
            box.files[f"{site}/{name}"] = data
        return Reply([result({"project_site": site, "wheel": "demo-1.0-py3-none-any.whl"})])

    return handler


# --- time -----------------------------------------------------------------------------------


class Clock:
    """time.monotonic / time.sleep for the stage: sleeping advances the clock at once and
    runs `on_sleep(sleeps)` (what another build does meanwhile), so waits cost nothing
    and a wait that never ends fails on its own bound instead of hanging the suite."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep: Callable[[int], None] | None = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.on_sleep:
            self.on_sleep(self.sleeps)
