"""Everything the command line writes, and how.

Results go to stdout (human text, or the JSON document with `--json`); progress, notes,
warnings and errors go to stderr, so `--json` output can be piped. Progress lines carry
timestamps when stderr is not a terminal or under CI (they end up in logs), and bold step
names on a terminal unless NO_COLOR is set; never spinners.

Streams are looked up per call, not at import: click's CliRunner swaps them per invocation.
Only light modules are imported here; the types of what is rendered only for mypy."""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pydeploy import __version__
from pydeploy.errors import PublishError, PydeployError

if TYPE_CHECKING:
    from pydeploy.attest.referrers import Attached
    from pydeploy.attest.remote import RemoteImage
    from pydeploy.attest.wanted import Wanted
    from pydeploy.build import BuildResult
    from pydeploy.cache.imageinfo import ImageInfo
    from pydeploy.cache.prune import Pruned
    from pydeploy.config.init import InitResult, WorkspaceInit
    from pydeploy.hostbuild import IndexResult
    from pydeploy.matrix import ServiceList
    from pydeploy.multibuild import ServiceOutcome
    from pydeploy.plan.buildpath import BuildPath
    from pydeploy.plan.planner import BuildPlan


# --- streams and documents ----------------------------------------------------------------


def echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def write_json(path: Path, document: dict[str, Any]) -> None:
    """`--metadata-file`: the same document as `--json`, written atomically."""
    from pydeploy import atomic  # noqa: PLC0415 - tempfile and shutil: not for every command

    try:
        atomic.write_text(path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise PublishError(f"Cannot write {path}: {exc.strerror}.") from None


def note(text: str) -> None:
    """A line for the user beside the result: stderr."""
    click.echo(text, err=True)


class Lines:
    """Progress lines on stderr (a `Progress`), and `say` for other lines among them;
    safe to call from several build threads."""

    def __init__(self) -> None:
        self.stream = sys.stderr
        tty = self.stream.isatty()
        self.plain = not tty or bool(os.environ.get("CI"))
        self.color = tty and not os.environ.get("NO_COLOR") and not self.plain
        self.lock = threading.Lock()
        self.warnings: list[str] = []  # kept for the no-change record, which repeats them

    def __call__(self, step: str, elapsed: float, detail: str | None, who: str = "") -> None:
        name = click.style(step, bold=True) if self.color else step
        stamp = time.strftime("%H:%M:%S ") if self.plain else ""
        prefix = f"[{who}] " if who else ""
        if step == "warning":  # a build's warnings read as warnings, not as a step
            self.warnings.append(detail or "")
            line = f"{stamp}{prefix}pydeploy: warning: {detail}"
        else:
            line = f"{stamp}{prefix}[{elapsed:7.1f}s] {name}" + (f": {detail}" if detail else "")
        self.say(line)

    def say(self, text: str) -> None:
        with self.lock:
            click.echo(text, file=self.stream)


def builder_output(line: str) -> None:
    """`build --verbose`: one line the builder printed."""
    click.echo(f"    | {line}", err=True)


class ContainerOutput:
    """`pydeploy run`: the container's stdout and stderr lines onto ours, whole lines."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, line: str, is_stderr: bool) -> None:
        with self.lock:
            click.echo(line, err=is_stderr)


# --- failures -----------------------------------------------------------------------------


def failure(exc: PydeployError, log: Path | None) -> None:
    """A PydeployError: one paragraph (the log holds the tool output behind it)."""
    where = f" The full tool output is in {log}." if log else ""
    click.echo(f"pydeploy: {exc.kind} error: {exc.message}{where}", err=True)


def interrupted() -> None:
    click.echo("pydeploy: interrupted.", err=True)


def internal_error(exc: BaseException, log: Path | None, debug: bool) -> None:
    """A bug: one line naming it, where its traceback is, and how to report it."""
    lines = str(exc).strip().splitlines()
    what = type(exc).__name__ + (f": {lines[0][:200]}" if lines else "")
    where = f"the traceback is in {log}" if log else "the traceback could not be saved"
    click.echo(
        f"pydeploy: internal error: {what}. This is a bug in pydeploy {__version__}: {where}"
        + ("" if debug else " (--debug prints it)")
        + "; please report it with that traceback and the command you ran.",
        err=True,
    )


def traceback_text(trace: str) -> None:
    """`--debug`: the traceback of a bug."""
    click.echo(trace.rstrip(), err=True)


# --- project: init, check, plan, schema ---------------------------------------------------


def init_done(result: InitResult) -> None:
    if result.created and result.target is None:
        click.echo(
            f"created {result.path} holding a commented [tool.pydeploy] table; no app "
            'object was found, so set `app = "module:attribute"` in it, then run '
            "`pydeploy plan`."
        )
        return
    action = "created" if result.created else "added [tool.pydeploy] to"
    click.echo(
        f"{action} {result.path}: app = {result.target!r} "
        f"({result.reason}). Next: `pydeploy plan`, then `pydeploy build`."
    )


def workspace_init(result: WorkspaceInit) -> None:
    """`init` at a virtual workspace root: one line per member, then what to run."""
    click.echo(
        f"{result.root} is a uv workspace root without [project]: pydeploy builds its "
        "members, each from its own [tool.pydeploy] table."
    )
    pending: list[str] = []
    for member in result.members:
        where = _relative(member.path, result.root)
        if member.state == "configured":
            state = "has a [tool.pydeploy] table"
        elif member.state == "no-app":
            state = "no app object found (a library?)"
        elif member.result is not None:
            state = f"added [tool.pydeploy]: app = {member.target!r} ({member.reason})"
        else:
            state = f"looks deployable: app {member.target!r} ({member.reason})"
            pending.append(f"pydeploy init {where}")
        click.echo(f"  {member.name} ({where}): {state}")
    if pending:
        click.echo("Set them up one by one:")
        for command in pending:
            click.echo(f"  {command}")
        click.echo("or all at once: pydeploy init --all")
    elif any(m.state != "no-app" for m in result.members):
        click.echo("Next: `pydeploy plan MEMBER`, or `pydeploy build --all` here.")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def workspace_check_text(root: Path, plans: Sequence[BuildPlan]) -> str:
    """`check` at a virtual workspace root: every deployable member's table is valid."""
    lines = [f"{root} is a uv workspace root; its deployable members are valid:"]
    lines += (
        f"  {plan.project.name} ({_relative(plan.project.root, root)}): app {plan.app}, "
        f"{plan.interface}, server {plan.server}"
        for plan in plans
    )
    return "\n".join(lines)


def check_ok_text(plan: BuildPlan) -> str:
    return (
        f"{plan.project.pyproject}: [tool.pydeploy] is valid "
        f"(app {plan.app}, {plan.interface}, server {plan.server})."
    )


def checked(text: str) -> None:
    """What `check` found (check_ok_text, workspace_check_text), or what it recorded."""
    click.echo(text)


_SOURCES = {
    "uv.lock": "uv.lock (frozen)",
    "pylock": "pylock.toml (PEP 751)",
    "poetry.lock": "poetry.lock (read on the host; installed as locked, hashes checked)",
    "pdm.lock": "pdm.lock (read on the host; installed as locked, hashes checked)",
    "Pipfile.lock": "Pipfile.lock (read on the host; installed as locked, hashes checked)",
    "requirements": "requirements files",
    "project": "[project.dependencies], resolved in the builder; pins recorded",
}


def plan_text(plan: BuildPlan) -> str:
    from pydeploy.plan.planner import server_command_preview  # noqa: PLC0415

    p = plan.project
    rows = [
        ("base image", f"{plan.base_image} ({plan.base_image_origin})"),
        ("python", f"{plan.python} ({plan.python_origin})"),
        ("app", f"{plan.app} [{plan.interface}] ({plan.app_origin})"),
        ("server", plan.server),
        ("command", " ".join(server_command_preview(plan))),
        ("image name", f"{plan.image_name} ({plan.image_name_origin})"),
        ("tags", f"{', '.join(plan.tags)} ({plan.tags_origin})"),
        ("user", f"{plan.user_id}:{plan.user_id} (non-root)"),
        ("port", f"{plan.port} (PORT overrides)"),
        ("dependencies", _SOURCES.get(plan.dependency_source, plan.dependency_source)),
        ("  chosen by", plan.dependency_origin or "-"),
        ("build packages", " ".join(plan.build_packages) or "-"),
        ("runtime packages", " ".join(plan.runtime_packages) or "-"),
        ("app check", _check_text(plan)),
        ("registry cache", plan.cache.describe()),
        *(
            ("build command" if i == 0 else "", f"{c.display} ({c.origin})")
            for i, c in enumerate(plan.build_commands)
        ),
        *_run_rows(plan),
    ]
    if plan.auto_runtime_packages:
        # Only the installed venv shows what its compiled files link against.
        found = "missing ones found at build time, their packages added (auto-runtime-packages)"
        rows.append(("shared libraries", found))
    width = max(len(k) for k, _ in rows)
    lines = [f"pydeploy plan for {p.name} {p.version} ({p.root})"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines.append("  layers")
    for i, layer in enumerate(plan.layers, 1):
        paths = ", ".join(layer.paths) if layer.paths else ""
        lines.append(
            f"    {i}. {layer.role.ljust(12)} {layer.description}"
            + (f" [{paths}]" if paths else "")
        )
    return "\n".join(lines)


def _check_text(plan: BuildPlan) -> str:
    """How the build checks the app: skipped, or in the runtime image with what."""
    if plan.check_skip:
        return "skipped (tool.pydeploy.check.skip)"
    extra = [f"check-env {', '.join(name for name, _ in plan.check_env)}"] if plan.check_env else []
    if plan.writable:
        extra.append(f"writable {', '.join(plan.writable)}")
    return "in the runtime image, read-only root" + (f"; {'; '.join(extra)}" if extra else "")


def _run_rows(plan: BuildPlan) -> list[tuple[str, str]]:
    """The healthcheck's choice and why, the release command, the other processes."""
    probe = plan.healthcheck
    if probe is None:
        rows = [("healthcheck", "none (tool.pydeploy.healthcheck.enabled = false)")]
    else:
        rows = [("healthcheck", f"GET {probe.path} ({probe.origin})")]
    if plan.release:
        rows.append(("release", f"{shlex.join(plan.release)} (before the server starts)"))
    rows += [
        (f"process {process.name}", f"{shlex.join(process.argv)} (x{process.replicas})")
        for process in plan.processes
    ]
    return rows


def show_plan(plan: BuildPlan, as_json: bool, path: BuildPath | str | None = None) -> None:
    """The plan, and the path the build takes (or, as text, why it would stop)."""
    if as_json:
        shown: dict[str, object] | None = None
        if path is not None:
            shown = {"refused": path} if isinstance(path, str) else path.to_json()
        echo_json({**plan.to_json(), **({"path": shown} if shown else {})})
    else:
        click.echo(plan_text(plan))
        if isinstance(path, str):
            click.echo(f"path: the build would stop here: {path}")
        elif path is not None:
            where = "a builder container" if path.kind == "engine" else "this host"
            listed = f" for {', '.join(path.platforms)}" if path.platforms else ""
            click.echo(f"path: {path.kind}: dependencies installed in {where}{listed}")
            click.echo(f"      because {path.reason}")


def schema_printed(text: str) -> None:
    click.echo(text, nl=False)


def schema_up_to_date(target: Path) -> None:
    click.echo(f"{target} is up to date.")


def schema_out_of_date(target: Path) -> None:
    click.echo(
        f"{target} is out of date with the [tool.pydeploy] models; "
        "run `pydeploy schema` and commit the result.",
        err=True,
    )


def wrote(path: Path, err: bool = False) -> None:
    click.echo(f"wrote {path}", err=err)


# --- build --------------------------------------------------------------------------------


def building(lines: Lines, plan: BuildPlan, build_id: str) -> None:
    lines.say(
        f"pydeploy: building {', '.join(plan.tags)} from {plan.project.root} (build {build_id})"
    )


def build_path(lines: Lines, path: BuildPath) -> None:
    if path.kind == "host":
        lines.say(f"pydeploy: {', '.join(path.platforms)} on this host ({path.reason})")


def built_index(lines: Lines, result: IndexResult) -> None:
    lines.say(f"built image index {result.index.digest} ({', '.join(result.tags)})")
    for each in result.results:
        lines.say(f"  {each.to_json()['platform']:<14} {each.image.registry_manifest_digest()}")


def built(lines: Lines, result: BuildResult) -> None:
    lines.say(f"built {result.image.image_id} ({', '.join(result.tags)})")
    width = _role_width(layer.role for layer in result.image.own_layers)
    for layer in result.image.own_layers:
        lines.say(f"  {layer.role:<{width}} {layer.digest[:19]}  {layer.size / 1e6:8.2f} MB")


def attested(lines: Lines, attached: Sequence[Attached], wanted: Wanted) -> None:
    """What `build` wrote and attached of the SBOM and provenance."""
    for path in (wanted.sbom_file, wanted.provenance_file):
        if path is not None:
            lines.say(f"wrote {path}")
    for item in attached:
        how = {"api": "referrers API", "tag-schema": "referrers tag", "layout": "layout"}
        lines.say(f"attached {item.kind} {item.artifact.descriptor.digest[:19]} to "
                  f"{item.where} ({how.get(item.referrers, item.referrers)})")  # fmt: skip


def _role_width(roles: Iterable[str]) -> int:
    """The role column fits the longest role (`dependencies-pydantic-core`)."""
    return max([13, *(len(role) for role in roles)])


def unchanged(
    lines: Lines, document: dict[str, Any], warnings: Sequence[str], *, summary: bool
) -> None:
    """The no-change fast path's answer: the build's warnings again, then (`summary`,
    without --json) the result in `built`'s shape."""
    for warning in warnings:
        lines("warning", 0.0, warning)
    if not summary:
        return
    lines.say("pydeploy: nothing changed since the last build; the engine still has its image")
    lines.say(f"built {document['image_id']} ({', '.join(document['tags'])})")
    own = [layer for layer in document["layers"] if layer["role"] != "base"]
    width = _role_width(layer["role"] for layer in own)
    for layer in own:
        digest, size = (layer["digest"] or layer["diff_id"])[:19], (layer["size"] or 0) / 1e6
        lines.say(f"  {layer['role']:<{width}} {digest}  {size:8.2f} MB")


def building_services(lines: Lines, names: Sequence[str], changed_since: str | None) -> None:
    if not names:
        lines.say(
            "pydeploy: no workspace member to build"
            + (f" (nothing changed since {changed_since})" if changed_since else "")
        )
    else:
        lines.say(f"pydeploy: building {len(names)} services: " + ", ".join(names))


def service_list(listed: ServiceList) -> None:
    """`build --all --list` without --json: one row per service on stdout (name,
    directory, every reference); an empty selection says so on stderr."""
    if not listed.services:
        since = f" (nothing changed since {listed.changed_since})" if listed.changed_since else ""
        note(f"pydeploy: no workspace member to build{since}")
        return
    name_width = max(len(s.name) for s in listed.services)
    dir_width = max(len(s.directory) for s in listed.services)
    for s in listed.services:
        click.echo(f"{s.name:<{name_width}}  {s.directory:<{dir_width}}  {', '.join(s.tags)}")


def services_summary(lines: Lines, outcomes: Sequence[ServiceOutcome]) -> None:
    lines.say("summary:")
    for o in outcomes:
        if o.ok and o.result is not None:
            lines.say(f"  ok      {o.name:<20} {o.seconds:6.1f}s  {', '.join(o.result.tags)}")
        elif o.error is not None:
            lines.say(f"  FAILED  {o.name:<20} {o.seconds:6.1f}s  "
                      f"{o.error.kind} error: {o.error.message}")  # fmt: skip


# --- deploy: manifest, dockerfile, run ----------------------------------------------------


def local_only(lines: Lines, image: str) -> None:
    lines.say(
        f"pydeploy: {image} is in the local engine only; push it (`pydeploy build "
        "--push`, or --push here) before a cluster can pull it by digest."
    )


def warning(lines: Lines, text: str) -> None:
    lines.say(f"pydeploy: warning: {text}")


def document(text: str) -> None:
    """A generated file (manifests, a Dockerfile) on stdout, as it would be written."""
    click.echo(text, nl=False)


def run_event(lines: Lines, text: str) -> None:
    lines.say(f"pydeploy: {text}")


def run_exited(lines: Lines, name: str, code: int) -> None:
    lines.say(f"pydeploy: {name} exited with {code}")


def release_failed(lines: Lines, command: Sequence[str], code: int, tail: Sequence[str]) -> None:
    """The release command failed: the server does not start."""
    lines.say(
        f"pydeploy: error: the release command `{shlex.join(command)}` exited with {code}; "
        "the server was not started. Its last lines:"
    )
    for line in tail:
        lines.say(f"  | {line}")
    lines.say(
        "pydeploy: fix the command or what it needs (tool.pydeploy.release-command), or "
        "pass --no-release to start without it."
    )


# --- cache: inspect, prune ----------------------------------------------------------------


def inspected(info: ImageInfo, as_json: bool) -> None:
    if as_json:
        echo_json(info.to_json())
        return
    click.echo(f"{info.name} {info.image_id[:19]}  user {info.user}")
    width = _role_width(layer.role for layer in info.layers)
    for layer in info.layers:
        click.echo(f"  {layer.role:<{width}} {layer.diff_id[:19]}  {layer.size / 1e6:9.2f} MB")
    click.echo(f"  added on top of the base: {info.own_size / 1e6:.2f} MB")


def inspected_remote(found: RemoteImage, *, as_json: bool, show_sbom: bool) -> None:
    """`inspect` of an image in a registry; with `show_sbom`, its SBOM document alone."""
    if show_sbom:
        click.echo(found.sbom().decode().rstrip("\n"))
        return
    if as_json:
        echo_json(found.to_json())
        return
    click.echo(f"{found.reference} {found.digest[:19]}  {found.layers} layers, "
               f"{found.size / 1e6:.2f} MB")  # fmt: skip
    if not found.referrers:
        click.echo("  no SBOM or provenance attached")
    for item in found.referrers:
        noun = "component" if item.artifact_type.endswith("cyclonedx+json") else "subject"
        plural = "" if item.components == 1 else "s"
        count = "" if item.components is None else f", {item.components} {noun}{plural}"
        click.echo(f"  {item.artifact_type}  {item.digest[:19]}  {item.size} bytes{count}")


def host_cache_only(message: str, root: Path) -> None:
    click.echo(f"pydeploy: {message} Only the host cache ({root}) is pruned.", err=True)


def pruned(result: Pruned, as_json: bool) -> None:
    from pydeploy.cache import prune as cachegc  # noqa: PLC0415

    if as_json:
        echo_json(result.to_json())
        return
    verb = "would remove" if result.dry_run else "removed"
    for line in cachegc.describe(result.removed):
        click.echo(f"{verb} {line}")
    for line in cachegc.describe(result.kept):
        click.echo(f"kept {line}")
    reclaim = "would reclaim" if result.dry_run else "reclaimed"
    count = len(result.removed)
    click.echo(f"pydeploy: {reclaim} {cachegc.format_size(result.size)} ({count} items)")
