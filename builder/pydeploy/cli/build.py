"""`pydeploy plan` and `pydeploy build`: what a build would do, and doing it (one project
or every workspace member)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pydeploy.cli import render
from pydeploy.cli.options import BASE_IMAGE, NETWORK, NO_ENGINE, PLATFORMS, PROJECT_DIR, TAGS
from pydeploy.cli.session import Session

if TYPE_CHECKING:
    from pydeploy.attest.referrers import Attached
    from pydeploy.attest.wanted import Wanted
    from pydeploy.build import BuildOptions, BuildResult
    from pydeploy.engine.client import Engine
    from pydeploy.hostbuild import IndexResult
    from pydeploy.plan.buildpath import BuildPath
    from pydeploy.plan.planner import BuildPlan, Overrides

BUILD_INTERRUPTED = "Build interrupted; its containers were removed."


@dataclass(frozen=True)
class _Members:
    """`build --all` and what narrows it: --only, --changed-since, --jobs."""

    build_all: bool
    only: tuple[str, ...]
    changed_since: str | None
    jobs: int | None

    def check(self) -> None:
        from pydeploy.errors import ConfigError  # noqa: PLC0415

        if (self.only or self.changed_since or self.jobs) and not self.build_all:
            raise ConfigError("--only, --changed-since and --jobs go with --all.",
                              hint="Add --all to build workspace members.")  # fmt: skip


@dataclass(frozen=True)
class _Result:
    """Where the JSON result goes: stdout with --json, a file with --metadata-file."""

    as_json: bool
    metadata_file: Path | None

    def write(self, document: dict[str, Any]) -> None:
        if self.metadata_file:
            render.write_json(self.metadata_file, document)
        if self.as_json:
            render.echo_json(document)


def project_plan(directory: Path, overrides: Overrides | None = None) -> BuildPlan:
    """The plan of the project at (or above) `directory`."""
    from pydeploy.config.project import find_project_root, load_project  # noqa: PLC0415
    from pydeploy.plan.planner import make_plan  # noqa: PLC0415

    # The host's CA variables are read here, once, so planning itself stays pure.
    return make_plan(load_project(find_project_root(directory)), overrides, os.environ)


def run_build(
    plan: BuildPlan, session: Session, options: BuildOptions, lines: render.Lines
) -> BuildResult:
    """One project's build in the session's engine, with progress lines; Ctrl-C/SIGTERM
    end it as InterruptError once the session has removed what it started."""
    from pydeploy import build as build_mod  # noqa: PLC0415 - the whole pipeline: slow

    engine = session.connect()
    render.building(lines, plan, engine.build_id)
    with session.cancelling(BUILD_INTERRUPTED):
        return build_mod.build(plan, engine, options, lines)


def choose_path(
    plan: BuildPlan, outputs: tuple[str, ...], session: Session, *, no_engine: bool
) -> tuple[BuildPath, Engine | None]:
    """Which way the build goes (pydeploy.plan.buildpath), and the engine if one answers
    (never asked with --no-engine)."""
    from pydeploy.base.platforms import host_platform  # noqa: PLC0415
    from pydeploy.plan import buildpath  # noqa: PLC0415

    engine = None if no_engine else session.engine_if_any()
    host = str(host_platform())
    if engine is not None and plan.platforms:  # what is foreign is the engine's to say
        os_name, arch = engine.platform()
        host = f"{os_name}/{arch}"
    path = buildpath.choose(
        platforms=plan.platforms, host=host, base=plan.base_image, outputs=outputs,
        no_engine=no_engine, engine_answers=engine is not None, unreachable=session.unreachable,
    )  # fmt: skip
    return path, engine


def _output_kinds(outputs: tuple[str, ...], push: bool) -> tuple[str, ...]:
    """The outputs' kinds as the path choice sees them: `--push` alone pushes (the engine
    path also loads the image then, as it always has; without an engine it only pushes)."""
    from pydeploy.publish import outputs as publish  # noqa: PLC0415

    kinds = tuple(publish.parse_output(spec).kind for spec in outputs)
    if push and "registry" not in kinds:
        kinds = (*kinds, "registry")
    return kinds or ("docker",)


@click.command()
@PROJECT_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@BASE_IMAGE
@click.option("--tag", "tags", multiple=True, help="Image tag or reference; repeatable.")
@NETWORK
@PLATFORMS
@NO_ENGINE
@click.option("--output", "outputs", multiple=True, help="As for `build`: decides the path too.")
@click.option("--push", is_flag=True, help="As for `build`.")
def plan(  # noqa: PLR0913, PLR0917 - click passes every option as a parameter
    directory: Path,
    as_json: bool,
    base_image: str | None,
    tags: tuple[str, ...],
    network: str | None,
    platforms: tuple[str, ...],
    no_engine: bool,
    outputs: tuple[str, ...],
    push: bool,
) -> None:
    """Show what `pydeploy build` would do (and which path it takes: an engine answers or not)."""
    from pydeploy.plan.planner import Overrides  # noqa: PLC0415

    overrides = Overrides(base_image=base_image, tags=tags, network=network, platforms=platforms)
    the_plan = project_plan(directory, overrides)
    from pydeploy.errors import PydeployError  # noqa: PLC0415

    path: BuildPath | str
    with Session() as session:
        try:
            path, _ = choose_path(
                the_plan, _output_kinds(outputs, push), session, no_engine=no_engine
            )
        except PydeployError as exc:  # the plan is still worth showing, with why it stops
            path = exc.message
    render.show_plan(the_plan, as_json, path)


@click.command()
@PROJECT_DIR
@BASE_IMAGE
@NETWORK
@TAGS
@click.option(
    "--registry",
    help="Prefix for image names that are not full references (e.g. ghcr.io/my-org).",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    help="docker (default), registry, oci:DIR or docker-archive:FILE; repeatable.",
)
@click.option("--push", is_flag=True, help="Push every tag (same as --output registry).")
@click.option(
    "--cache-from",
    metavar="REPOSITORY",
    help="Registry cache to reuse layers from (default: the push repository when pushing).",
)
@click.option(
    "--cache-to",
    metavar="REPOSITORY",
    help="Registry cache to record layers in (default: the push repository when pushing).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option(
    "--metadata-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON result to this file.",
)
# --- SBOM and provenance (pydeploy.attest) ---
@click.option(
    "--sbom",
    "sbom_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the image's CycloneDX JSON SBOM to this file.",
)
@click.option(
    "--provenance",
    "provenance_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a SLSA provenance statement to this file (and attach it to pushes/layouts).",
)
@click.option(
    "--no-attest",
    is_flag=True,
    help="Attach no SBOM/provenance to what is pushed or written as an OCI layout.",
)
# --- end SBOM and provenance ---
@click.option("--all", "build_all", is_flag=True, help="Build every workspace member with a table.")
@click.option("--only", multiple=True, help="With --all: build only this member; repeatable.")
@click.option("--changed-since", metavar="GIT_REF", help="With --all: only members changed since.")
@click.option("--jobs", type=click.IntRange(1, 64), help="With --all: parallel builds (CPUs).")
@click.option(
    "--list",
    "list_only",
    is_flag=True,
    help="With --all: print the services it would build as a CI job matrix; build nothing.",
)
@click.option("-v", "--verbose", is_flag=True, help="Stream the builder's full output.")
@PLATFORMS
@NO_ENGINE
def build(  # noqa: PLR0913, PLR0917 - click passes every option as a parameter
    directory: Path,
    base_image: str | None,
    network: str | None,
    tags: tuple[str, ...],
    registry: str | None,
    outputs: tuple[str, ...],
    push: bool,
    cache_from: str | None,
    cache_to: str | None,
    as_json: bool,
    metadata_file: Path | None,
    sbom_file: Path | None,
    provenance_file: Path | None,
    no_attest: bool,
    build_all: bool,
    only: tuple[str, ...],
    changed_since: str | None,
    jobs: int | None,
    list_only: bool,
    verbose: bool,
    platforms: tuple[str, ...],
    no_engine: bool,
) -> None:
    """Build the image: wheels in a builder container (or on this host without an
    engine, and for other platforms), then deterministic layers."""
    from pydeploy.cli import unchanged  # noqa: PLC0415 - before the build's heavy imports

    members = _Members(build_all, only, changed_since, jobs)
    members.check()
    result = _Result(as_json, metadata_file)
    if list_only:
        from pydeploy.plan.planner import Overrides  # noqa: PLC0415

        naming = Overrides(base_image=base_image, tags=tags, network=network,
                           registry=registry, platforms=platforms)  # fmt: skip
        _list_all(directory, naming, (push, outputs), members, result)
        return
    wanted = _attest_wanted(sbom_file, provenance_file, no_attest, build_all=build_all)
    record = None
    registry_cache = cache_from is not None or cache_to is not None
    # The fast path records none of these (nor an SBOM: it needs the build's layers).
    fast = not (platforms or no_engine or registry_cache or wanted.files)
    if unchanged.eligible(outputs, push, build_all) and fast:
        retag = unchanged.full_references(tags)
        record = unchanged.record_file(
            {"directory": str(directory), "base": base_image, "network": network,
             "tags": "full references" if retag else tags, "registry": registry,
             "outputs": outputs},
        )  # fmt: skip
        found = unchanged.answer(record, retag)
        if found is not None:
            document, warnings = found
            result.write(document)
            render.unchanged(render.Lines(), document, warnings, summary=not as_json)
            return
    from pydeploy import build as build_mod  # noqa: PLC0415 - keeps `plan`/`check` light
    from pydeploy.plan.planner import Overrides  # noqa: PLC0415
    from pydeploy.publish import outputs as publish  # noqa: PLC0415

    specs = [publish.parse_output(spec) for spec in outputs] or [publish.Output("docker")]
    if push and not any(o.kind == "registry" for o in specs):
        specs.append(publish.Output("registry"))
    overrides = Overrides(
        base_image=base_image, tags=tags, network=network, registry=registry,
        platforms=platforms, cache_from=cache_from, cache_to=cache_to,
    )  # fmt: skip
    options = build_mod.BuildOptions(
        outputs=tuple(specs),
        verbose=verbose,
        output=render.builder_output if verbose else None,
    )
    with Session() as session:
        if build_all:
            code = _build_all(directory, overrides, options, members, result)
            if code:
                sys.exit(code)
            return
        chosen = _output_kinds(outputs, push)
        _build_one(
            session, directory, (overrides, no_engine, chosen), options, result, (record, wanted)
        )


def _attest_wanted(
    sbom_file: Path | None, provenance_file: Path | None, no_attest: bool, *, build_all: bool
) -> Wanted:
    from pydeploy.attest.wanted import Wanted  # noqa: PLC0415 - not on every command's start
    from pydeploy.errors import ConfigError  # noqa: PLC0415

    if build_all and (sbom_file or provenance_file):
        raise ConfigError("--sbom and --provenance describe one image, not --all's.",
                          hint="Build each member on its own to write its SBOM.")  # fmt: skip
    # `build --all` attaches nothing yet: multibuild's results do not reach this command.
    return Wanted(sbom_file, provenance_file, attach=not no_attest and not build_all)


def _build_one(  # noqa: PLR0913, PLR0917 - the command's parts, passed on
    session: Session,
    directory: Path,
    how: tuple[Overrides, bool, tuple[str, ...]],
    options: BuildOptions,
    result: _Result,
    after: tuple[Path | None, Wanted],
) -> None:
    from datetime import datetime, timezone  # noqa: PLC0415

    from pydeploy.attest.wanted import BuildRun, attaches  # noqa: PLC0415
    from pydeploy.cli import unchanged  # noqa: PLC0415
    from pydeploy.errors import ConfigError  # noqa: PLC0415

    overrides, no_engine, kinds = how
    record, wanted = after
    lines = render.Lines()
    started = datetime.now(timezone.utc)
    if attaches(options.outputs, wanted) or wanted.files:
        # CycloneDX's imports (~85 ms of CPU) overlap the build, which mostly waits on
        # the engine and the registry, instead of adding to every push.
        threading.Thread(
            target=importlib.import_module, args=("pydeploy.attest.attach",), daemon=True
        ).start()
    with contextlib.ExitStack() as stack:
        recorder = stack.enter_context(unchanged.recording(record)) if record else None
        the_plan = project_plan(directory, overrides)
        if wanted.files and len(the_plan.platforms) > 1:
            raise ConfigError(
                "--sbom and --provenance describe one image; this build makes one per platform.",
                hint="Build each platform with its own --platform to write its SBOM.",
            )
        path, engine = choose_path(the_plan, kinds, session, no_engine=no_engine)
        if path.kind == "engine":
            built: BuildResult | IndexResult = run_build(the_plan, session, options, lines)
        else:
            recorder = None  # the fast path answers for engine builds only
            outputs = tuple(o for o in options.outputs if o.kind in kinds)
            on_host = dataclasses.replace(options, outputs=outputs)
            built = run_host_build(the_plan, session, on_host, lines, (path, engine))
    from pydeploy.hostbuild import IndexResult  # noqa: PLC0415

    if recorder is not None and not isinstance(built, IndexResult):
        recorder.save(directory, the_plan, built, lines.warnings)
    document = built.to_json()
    if attaches(options.outputs, wanted) or wanted.files:
        begun = time.monotonic()
        from pydeploy.attest import attach  # noqa: PLC0415 - imported (or importing) above

        run = BuildRun(
            engine.build_id if engine is not None else uuid.uuid4().hex[:12],
            started, datetime.now(timezone.utc),
        )  # fmt: skip
        # An index: each platform's image gets its own (--sbom was refused above).
        each = built.results if isinstance(built, IndexResult) else [built]
        entries = document["platforms"] if isinstance(built, IndexResult) else [document]
        attached: list[Attached] = []
        for image, entry in zip(each, entries, strict=True):
            outcome = attach.attest(image, options.outputs, wanted, run, pushed=tuple(built.pushed))
            for problem in outcome.problems:
                lines("warning", 0.0, f"{problem} (--no-attest skips attaching)")
            entry["attestations"] = [a.to_json() for a in outcome.attached]
            attached.extend(outcome.attached)
        # Like every step's: when it finished, counted from the build's start.
        timings = document["timings"]
        last = max(timings.values(), default=0.0)
        timings["attest"] = round(last + time.monotonic() - begun, 3)
        render.attested(lines, attached, wanted)
    result.write(document)
    if not result.as_json:
        if isinstance(built, IndexResult):
            render.built_index(lines, built)
        else:
            render.built(lines, built)


def run_host_build(
    plan: BuildPlan,
    session: Session,
    options: BuildOptions,
    lines: render.Lines,
    chosen: tuple[BuildPath, Engine | None],
) -> BuildResult | IndexResult:
    """A build whose dependencies are installed on this host (pydeploy.hostbuild)."""
    from pydeploy import hostbuild  # noqa: PLC0415
    from pydeploy.base.platforms import Platform  # noqa: PLC0415

    path, engine = chosen
    render.building(lines, plan, engine.build_id if engine is not None else "without an engine")
    render.build_path(lines, path)
    platforms = tuple(Platform.parse(p) for p in path.platforms)
    with session.cancelling(BUILD_INTERRUPTED):
        return hostbuild.build_on_host(
            plan, options, lines, platforms=platforms, engine=engine if path.uses_engine else None
        )


def _build_all(
    directory: Path,
    overrides: Overrides,
    options: BuildOptions,
    members: _Members,
    result: _Result,
) -> int:
    """Each member builds in its own engine (multibuild owns those); Ctrl-C/SIGTERM reach
    it as KeyboardInterrupt through the session's handlers."""
    from pydeploy import multibuild  # noqa: PLC0415

    selected = multibuild.select_members(directory.resolve(), members.only, members.changed_since)
    lines = render.Lines()
    render.building_services(lines, [m.name for m in selected], members.changed_since)
    outcomes: list[multibuild.ServiceOutcome] = []
    if selected:
        outcomes = multibuild.build_members(
            selected, overrides, options,
            lambda who, step, elapsed, detail: lines(step, elapsed, detail, who), members.jobs,
        )  # fmt: skip
    result.write(
        {
            "ok": all(o.ok for o in outcomes),
            "services": [o.to_json() for o in outcomes],
        }
    )
    render.services_summary(lines, outcomes)
    return multibuild.exit_code(outcomes)


def _list_all(
    directory: Path,
    overrides: Overrides,
    publishing: tuple[bool, tuple[str, ...]],
    members: _Members,
    result: _Result,
) -> None:
    """`build --all --list`: the CI matrix (pydeploy.matrix), planned with the overrides
    `build` would use. A flag that only shapes a build is refused, not ignored."""
    from pydeploy import matrix  # noqa: PLC0415
    from pydeploy.errors import ConfigError  # noqa: PLC0415

    push, outputs = publishing
    if not members.build_all:
        raise ConfigError("--list goes with --all.", hint="Run `pydeploy build --all --list`.")
    if push or outputs or members.jobs:
        raise ConfigError(
            "--list builds nothing, so --push, --output and --jobs do not apply to it.",
            hint="List with `build --all --list --json`, then build each service with "
            "`build --all --only NAME` and those flags.",
        )
    listed = matrix.list_services(directory, members.only, members.changed_since, overrides)
    result.write(listed.to_json())
    if not result.as_json:
        render.service_list(listed)
