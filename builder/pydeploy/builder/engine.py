"""What the builder stage needs from an engine, as a Protocol: stage.py is written
against it, engine.client.Engine satisfies it, and the unit tests' fake engine
(tests/unit/builder/fake_engine.py) does too, so the stage's control flow (escalation to
the full builder, venv volume claims, the interface decision) is tested without Docker.

Only the operations the stage calls, with the parameters it passes; the values are those
of engine/types.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import IO, Protocol

from pydeploy.engine.owners import Owner
from pydeploy.engine.types import (
    CommitSettings,
    Confinement,
    ImageFacts,
    ImageRef,
    Mount,
    Outcome,
    RunResult,
)


class StageBox(Protocol):
    """A created (not yet started) container; removed when its `container` block ends."""

    @property
    def id(self) -> str: ...

    def put_files(self, directory: str, files: dict[str, bytes], mode: int = 0o644) -> None:
        """Write small files (name -> bytes) into `directory`, which is created."""

    def put_archive(self, path: str, data: bytes | IO[bytes]) -> None:
        """Unpack the tar `data` at `path`."""

    def get_archive(self, path: str) -> Iterator[bytes]:
        """A tar stream of `path`; entries start with the path's last component."""

    def read_file(self, path: str) -> bytes | None:
        """One regular file's bytes; None when it does not exist."""

    def follow(self, on_line: Callable[[str], None]) -> Outcome:
        """Start it, pass on each line it prints, and say how it ended."""

    def follow_until(
        self, on_line: Callable[[str], None], done: Callable[[], bool]
    ) -> Outcome | None:
        """`follow` until `done()` holds after a line: None then (not waited for)."""

    def commit(self, repository: str, tag: str, settings: CommitSettings) -> str:
        """Save its filesystem as an image configured by `settings` alone; the image ID."""

    def changes(self) -> list[tuple[str, str]]:
        """`docker diff`: (absolute path, "modified" | "added" | "deleted")."""


class StageEngine(Protocol):
    """One build's connection to an engine, as the builder stage uses it."""

    @property
    def build_id(self) -> str:
        """This build's id: the label on everything it creates and the owner of its claims."""

    @property
    def owner(self) -> Owner:
        """This process, as a claim's owner."""

    def ensure_image(self, name: str) -> ImageRef:
        """The local image, pulled when missing."""

    def inspect_image(self, name: str) -> ImageFacts | None:
        """What the engine knows of a local image; None when it has none of that name."""

    def network_mode(self, configured: str | None) -> str:
        """The network builder containers use."""

    def volume_labels(self, name: str) -> dict[str, str] | None:
        """A volume's labels; None when it does not exist."""

    def create_volume(self, name: str, labels: dict[str, str] | None = None) -> None:
        """Create a volume; an existing one is left as it is (its labels too)."""

    def remove_volume(self, name: str) -> None:
        """Remove a volume (a missing one is fine); fails while a container uses it."""

    def remove_unused_volume(self, name: str) -> bool:
        """Remove a volume unless a container uses it: False then."""

    def run(
        self,
        image: str,
        argv: list[str],
        *,
        files: dict[str, dict[str, bytes]] | None = None,
        network: str = "host",
    ) -> RunResult:
        """Run a container to completion, with `files` ({directory: {name: bytes}})."""

    def container(  # noqa: PLR0913 - keyword-only options, as `docker create` takes them
        self,
        image: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        mounts: Iterable[Mount] = (),
        network: str = "host",
        stdin: bytes | None = None,
        confine: Confinement | None = None,
    ) -> AbstractContextManager[StageBox]:
        """A created container, removed when the block exits for whatever reason;
        `stdin` reaches it on its attached stdin, never in its configuration. Without
        `confine` it runs as root in `/`."""

    def hold(self) -> AbstractContextManager[None]:
        """Pins made inside stay until the outermost `hold` block ends."""

    def pin(self, image: str, mounts: Iterable[Mount] = ()) -> StageBox:
        """A running container that keeps `image` and the volumes of `mounts` in use."""

    def unpin(self, box: StageBox) -> None:
        """Remove a pin now."""

    def containers_with_label(
        self, build_id: str | None = None, *, running_only: bool = False
    ) -> list[str]:
        """IDs of the containers of this build (or of `build_id`)."""

    def reap_orphans(self) -> list[str]:
        """Remove the builder containers of dead owners; their IDs."""

    def remove(self, ident: str) -> None:
        """Force-remove a container; a missing one is fine."""
