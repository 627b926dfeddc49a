"""The app check: the app imported where it will run, before the image is published.

The container runs the runtime image itself (base, system packages, user, venv, app and
project wheel, launcher: the build loads it into the engine untagged), as the runtime
uid, with the root filesystem read-only, `/tmp` and every `writable` directory a fresh
tmpfs owned by that uid, the image's own environment, and on top of it only the
`check-env` placeholders (never in the image, masked in every text kept). The check
program is the builder script's source given to `python -c`, so nothing of it is in any
image. It imports the target as the server will (a factory is called), measures what
one worker costs (plan/memory.py), and reports why an import failed: missing environment
variables and writes the read-only image refused become errors that name what to add.

What is reported becomes the interface or one error (`decide_interface`, a table from
the report's kind to its message). No engine other than StageEngine.container.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace
from pathlib import Path
from typing import Any, Literal

from pydeploy import payload
from pydeploy.builder.credentials import Masker
from pydeploy.builder.engine import StageEngine
from pydeploy.builder.transcript import Reporting, Transcript, attach, tail
from pydeploy.cachekeys import CHECK_RECIPE
from pydeploy.engine.types import Confinement
from pydeploy.errors import AppCheckError
from pydeploy.payload.builder_script import CheckJob, Measure
from pydeploy.plan import servers, writable
from pydeploy.plan.memory import WorkerMemory
from pydeploy.plan.memory import estimate as estimate_memory
from pydeploy.plan.planner import APP_DIR, VENV, BuildPlan

TMP = "/tmp"  # noqa: S108 -- the check's own tmpfs mount point
Status = Literal["passed", "skipped"]


@dataclass(frozen=True)
class AppCheck:
    interface: Literal["wsgi", "asgi"]
    memory: WorkerMemory  # what one worker costs (see pydeploy.plan.memory)
    status: Status = "passed"
    cached: bool = False  # the answer of an earlier check of the same image and settings
    # Where it ran: "image" (a container of the runtime image), "host" (an interpreter of
    # this host importing the image's venv and app: builds without an engine), or ""
    # when it did not run; `reason` says why it ran elsewhere or not at all.
    where: str = "image"
    reason: str = ""


# --- the container ------------------------------------------------------------------------


def measure_job(plan: BuildPlan) -> Measure:
    """How the check measures a worker: the server's modules, then the app and one GET
    of the health path (the route the platform polls anyway), unless `worker-memory` is
    set, which replaces the per-worker measurement and spares the app the request."""
    return {
        "server": plan.server,
        "modules": list(servers.worker_modules(plan.server)),
        "path": plan.launch.healthcheck_path or "/",
        "request": plan.server_policy.worker_memory is None,
    }


def check_job(plan: BuildPlan) -> CheckJob:
    """The `check-app` job document (the builder script's CheckJob)."""
    return {"target": plan.app, "app_dir": APP_DIR, "measure": measure_job(plan)}


def confinement(plan: BuildPlan) -> Confinement:
    """As the image runs in production: its uid, /app, a read-only root filesystem and
    writable tmpfs only at /tmp and the `writable` directories (owned by the uid)."""
    uid = plan.user_id
    tmpfs = {TMP: "mode=1777", **writable.tmpfs_mounts(plan.writable, uid)}
    return Confinement(user=f"{uid}:{uid}", workdir=APP_DIR, read_only=True, tmpfs=tmpfs)


def check_environment(plan: BuildPlan) -> dict[str, str]:
    """What the check adds to the image's environment: the placeholders, and a fixed
    hash seed, so the memory measurement repeats to within a few KiB (two builds of the
    same inputs record the same number, and give the same image)."""
    return {**dict(plan.check_env), "PYTHONHASHSEED": "0"}


def cache_key(plan: BuildPlan, image: list[str], env: Mapping[str, str], user: str) -> str:
    """What decides the check's answer: the image (base ID and layer diff IDs, the
    launcher's aside), its environment and user, and every setting of the check itself
    (check-env values included: the key is a digest, and they are placeholders)."""
    document = [
        CHECK_RECIPE, image, sorted(env.items()), user, sorted(plan.check_env), plan.app,
        plan.interface, plan.server, plan.server_policy.interface, plan.server_policy.type,
        measure_job(plan), plan.server_policy.worker_memory, list(plan.writable), plan.network,
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()


def run_check(engine: StageEngine, plan: BuildPlan, image: str, report: Reporting) -> AppCheck:
    """Import the app in a container of `image` (the runtime image, loaded by ID)."""
    started = time.monotonic()
    masker = Masker(value for _, value in plan.check_env)
    transcript = Transcript(report.progress, masker, report.output, report.verbose)
    argv = [
        f"{VENV}/bin/python",
        "-c",
        payload.source("builder_script.py").decode(),
        "check-app",
        json.dumps(check_job(plan), sort_keys=True),
    ]
    with engine.container(
        image,
        argv,
        env=check_environment(plan),
        network=engine.network_mode(plan.network),
        stdin=b"{}\n",  # no secrets: the line only opens the lifeline
        confine=confinement(plan),
    ) as box:
        # The result line is the program's last act (it then exits at once): the check is
        # over when it arrives, and the container is removed without waiting for its end.
        outcome = box.follow_until(transcript, lambda: transcript.result is not None)
    if transcript.result is None:
        # Without a result the container ran to its end: `outcome` says how.
        killed = outcome is not None and outcome.oom_killed
        ended = "was killed for lack of memory" if killed else "ended"
        code = outcome.exit_code if outcome is not None else "unknown"
        raise attach(
            AppCheckError(
                f"The app check {ended} without a report (exit {code}) while "
                f"importing {plan.app!r} in the runtime image:\n{tail(transcript.lines)}\n",
                hint="The app (or something it imports) ended the process; run the image "
                "to see it: `docker run --rm IMAGE python -c 'import ...'`.",
            ),
            transcript.text,
        )
    report.progress("app check", time.monotonic() - started, None)
    return _answer(plan, transcript.result, transcript.text)


def _as_in_image(found: dict[str, Any], app_dir: Path) -> dict[str, Any]:
    """A host check's report with the app directory's host path shown as /app."""
    text = json.dumps(found)
    return dict(json.loads(text.replace(json.dumps(str(app_dir))[1:-1], APP_DIR)))


def _answer(plan: BuildPlan, result: dict[str, Any], output: str, **how: str) -> AppCheck:
    found = result.get("app") or {}
    interface = decide_interface(plan, found, output)
    memory = estimate_memory(
        found.get("memory"), server=plan.server, configured=plan.server_policy.worker_memory
    )
    return AppCheck(interface, memory, **how)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HostRun:
    """A check on this host (no engine): an interpreter of the image's Python X.Y, the
    image's venv and its app directory, both on the host's disk."""

    python: str
    site_packages: Path
    app_dir: Path
    scratch: Path
    project_site: Path | None = None  # the project's own wheel, installed on its own


def run_host_check(plan: BuildPlan, host: HostRun, report: Reporting) -> AppCheck:
    """Import the app with a host interpreter in a venv whose site-packages are the
    image's (nothing of the host's own packages is visible), from a copy of the app's
    files. What it cannot show: the base's own files and libraries, the runtime uid and
    the read-only root filesystem; the build's output says where the check ran."""
    venv = host.scratch / "check-venv"
    minor = host.site_packages.parent.name  # "python3.11"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib").mkdir()
    (venv / "pyvenv.cfg").write_text(
        f"home = {Path(host.python).parent}\ninclude-system-site-packages = false\n",
        encoding="utf-8",
    )
    (venv / "bin" / "python").symlink_to(host.python)
    (venv / "lib" / minor).mkdir()
    (venv / "lib" / minor / "site-packages").symlink_to(host.site_packages)
    masker = Masker(value for _, value in plan.check_env)
    transcript = Transcript(report.progress, masker, report.output, report.verbose)
    # Writable as in the image: /tmp (here the scratch directory too) and the `writable`
    # directories, which start empty as the image's tmpfs mounts do.
    scratch_tmp = host.scratch / "tmp"
    scratch_tmp.mkdir(exist_ok=True)
    writable_dirs = [str(scratch_tmp), TMP]
    for path in plan.writable:
        inside = (
            host.app_dir / Path(path).relative_to(APP_DIR)
            if path.startswith(APP_DIR + "/")
            else None
        )
        if inside is not None:
            shutil.rmtree(inside, ignore_errors=True)
            inside.mkdir(parents=True)
            writable_dirs.append(str(inside))
    job = {**check_job(plan), "app_dir": str(host.app_dir), "writable": writable_dirs}
    argv = [str(venv / "bin" / "python"), "-c", payload.source("builder_script.py").decode(),
            "check-app", json.dumps(job, sort_keys=True)]  # fmt: skip
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(host.scratch),
           "TMPDIR": str(scratch_tmp), "VIRTUAL_ENV": str(venv), "PYTHONUNBUFFERED": "1",
           "PYTHONDONTWRITEBYTECODE": "1", **check_environment(plan)}  # fmt: skip
    if host.project_site is not None:  # in the image it is in site-packages too
        env["PYTHONPATH"] = str(host.project_site)
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, cwd=host.app_dir, start_new_session=True,
    ) as proc:  # fmt: skip
        assert proc.stdin is not None  # noqa: S101 - PIPEs
        assert proc.stdout is not None  # noqa: S101
        proc.stdin.write(b"{}\n")
        proc.stdin.flush()
        try:
            for raw in proc.stdout:
                transcript(raw.decode("utf-8", "replace").rstrip("\n"))
                if transcript.result is not None:
                    break
        finally:
            proc.kill()
            threading.Thread(target=proc.stdin.close, daemon=True).start()
        code = proc.wait()
    if transcript.result is None:
        raise attach(
            AppCheckError(
                f"The app check ended without a report (exit {code}) while importing "
                f"{plan.app!r} on this host:\n{tail(transcript.lines)}\n",
                hint="The app (or something it imports) ended the process.",
            ),
            transcript.text,
        )
    version = ".".join(map(str, sys.version_info[:3])) if host.python == sys.executable else ""
    reason = f"no engine: {host.python}" + (f" (Python {version})" if version else "")
    result = _as_in_image(transcript.result, host.app_dir)
    return _answer(plan, result, transcript.text, where="host", reason=reason)


def not_run(plan: BuildPlan, reason: str) -> AppCheck:
    """No engine and no interpreter here that can import the image's venv: nothing ran.
    The interface must be known without the check (as with `check.skip`)."""
    if plan.interface == "auto":
        raise AppCheckError(
            f"The app check cannot run ({reason}), and nothing else tells whether "
            f"{plan.app!r} is WSGI or ASGI.",
            hint=(
                'Set `tool.pydeploy.server.interface = "wsgi"` (or "asgi") in '
                f"{plan.project.pyproject}, or build where an engine answers."
            ),
        )
    return dataclasses_replace(skipped(plan), where="", reason=reason)


def skipped(plan: BuildPlan) -> AppCheck:
    """`check.skip`: the planned interface (the planner refuses `auto` then); only an
    explicit `server.worker-memory` is known of what a worker costs."""
    interface: Literal["wsgi", "asgi"] = "asgi" if plan.interface == "asgi" else "wsgi"
    memory = estimate_memory(None, server=plan.server, configured=plan.server_policy.worker_memory)
    return AppCheck(interface, memory, "skipped", where="", reason="tool.pydeploy.check.skip")


# --- what a report means ------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """How errors name the app target and its fix."""

    where: str
    fix: str


Explain = Callable[[_Target, dict[str, Any]], tuple[str, str]]


def _returned(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    message = (
        f"{t.where}: the factory returned a {f.get('type')}, which is not a WSGI "
        "(environ, start_response) or ASGI (scope, receive, send) app."
    )
    return message, f"{t.fix} to name a factory that returns the app (`return app`)."


def _failed_call(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    message = f"{t.where}: calling the factory failed in the runtime image:\n{f.get('error', '')}\n"
    return message, f"{t.fix}, or fix the factory (the server calls it the same way)."


def _async_factory(t: _Target, _f: dict[str, Any]) -> tuple[str, str]:
    message = (
        f"{t.where} calls an async function: gunicorn and uvicorn call a factory without "
        "awaiting it, so they would get a coroutine, not an app."
    )
    return message, f"{t.fix}: make the factory a plain `def`, or name a module-level app object."


def _not_a_factory(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    message = f"{t.where} calls a {f.get('type')}, which is not callable."
    return message, f"{t.fix} to name the factory function."


def _bad_target(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    return f"{t.where} is not an app target: {f.get('error')}.", t.fix


def _no_attribute(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    message = f"{t.where} names an attribute its module does not have: {f.get('error')}."
    return message, f"{t.fix} to name the application object as `module:attribute`."


def _no_import(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    message = f"{t.where} does not import in the runtime image:\n{f.get('error', '')}\n"
    return message, f"{t.fix}, or add the missing dependency."


def _not_callable(t: _Target, f: dict[str, Any]) -> tuple[str, str]:
    message = (
        f"{t.where} is not callable (it is a {f.get('type')}), so it cannot be a WSGI or ASGI app."
    )
    return message, f"{t.fix} to name the application object."


def _a_class(t: _Target, _f: dict[str, Any]) -> tuple[str, str]:
    message = f"{t.where} is a class, not an application instance."
    return message, f"{t.fix} to name the instance (e.g. `main:app`), not its class."


# A factory target's own failures (its call failed, or returned no app).
_FACTORY_FAILURES: dict[str, Explain] = {
    "factory": _failed_call,
    "async-factory": _async_factory,
    "not-a-factory": _not_a_factory,
    "not-callable": _returned,
    "class": _returned,
    "no-arguments": _returned,
}
# Any target's failures.
_FAILURES: dict[str, Explain] = {
    "target": _bad_target,
    "attribute": _no_attribute,
    "import": _no_import,
    "crash": _no_import,
    "not-callable": _not_callable,
    "class": _a_class,
}
# Failures whose report is the app's own output: kept on the error for --verbose.
_WITH_OUTPUT = frozenset({"import", "crash", "factory"})


def _target(plan: BuildPlan) -> _Target:
    configured = plan.app_origin == "tool.pydeploy.app"
    where = (
        f"`tool.pydeploy.app` = {plan.app!r}" if configured else f"the detected app {plan.app!r}"
    )
    fix = (
        f"Fix `tool.pydeploy.app` in {plan.project.pyproject}"
        if configured
        else f'Set `tool.pydeploy.app = "module:attribute"` in {plan.project.pyproject}'
    )
    return _Target(where, fix)


def decide_interface(
    plan: BuildPlan, found: dict[str, Any], output: str
) -> Literal["wsgi", "asgi"]:
    """The interface the check's report settles, or the AppCheckError it amounts to."""
    target = _target(plan)
    kind = str(found.get("kind") or "")
    _raise_diagnosed(plan, found, output)
    if kind == "no-arguments" and not found.get("factory"):
        reference = plan.app.partition("(")[0]
        raise AppCheckError(
            f"{target.where} is a {found.get('type')} that takes no arguments, so it cannot "
            "be a WSGI (environ, start_response) or ASGI (scope, receive, send) app: it looks "
            "like an app factory, which the server must call to get the app.",
            hint=f'Name its call: `tool.pydeploy.app = "{reference}()"` in '
            f"{plan.project.pyproject} (with literal arguments if it needs some).",
        )
    table = _FACTORY_FAILURES if found.get("factory") and kind in _FACTORY_FAILURES else _FAILURES
    explain = table.get(kind)
    if explain is not None:
        message, hint = explain(target, found)
        error = AppCheckError(message, hint=hint)
        raise attach(error, output) if kind in _WITH_OUTPUT else error
    interface = found.get("interface")
    if interface is None:
        return _unrecognised(plan, target, found)
    return _agreed(plan, target, interface)


def _unrecognised(
    plan: BuildPlan, target: _Target, found: dict[str, Any]
) -> Literal["wsgi", "asgi"]:
    """A callable whose signature says neither: a forced interface must be a call the
    object's signature takes (a factory forced to `wsgi` would answer every request
    with a 500)."""
    takes = found.get("accepts") or ["wsgi", "asgi"]
    if plan.interface != "auto" and plan.interface in takes:
        return plan.interface
    shown = found.get("type")
    if plan.interface != "auto":
        raise AppCheckError(
            f"{target.where} is a {shown} whose signature does not take the "
            f"{plan.interface.upper()} call, so the server could not call it with a request.",
            hint=f"{target.fix} to name the application object or its factory's call "
            "(`module:create_app()`).",
        )
    raise AppCheckError(
        f"{target.where} is a callable {shown}, but neither a WSGI (environ, start_response) "
        "nor an ASGI (scope, receive, send) app could be recognised.",
        hint=f"{target.fix} to name the application object or its factory's call "
        "(`module:create_app()`). Only for an app whose signature cannot be read "
        "(`*args`), set `tool.pydeploy.server.interface` to `wsgi` or `asgi`.",
    )


def _agreed(plan: BuildPlan, target: _Target, interface: str) -> Literal["wsgi", "asgi"]:
    """The app's interface, once the configured interface and server agree with it."""
    forced = plan.server_policy.interface
    if forced not in ("auto", interface):
        raise AppCheckError(
            f"`tool.pydeploy.server.interface` = {forced!r}, but {target.where} is an "
            f"{interface.upper()} app.",
            hint=f"Set `tool.pydeploy.server.interface` to {interface!r} (or `auto`).",
        )
    configured = plan.server_policy.type
    if servers.mismatch(configured, interface):
        raise AppCheckError(
            f"`tool.pydeploy.server.type` = {configured!r} cannot run {target.where}: it is "
            f"an {interface.upper()} app.",
            hint=f"Use {servers.choices('wsgi')} for WSGI apps, {servers.choices('asgi')} "
            "for ASGI (or `auto`).",
        )
    return "asgi" if interface == "asgi" else "wsgi"


# --- failures the check could explain -------------------------------------------------------


def _raise_diagnosed(plan: BuildPlan, found: dict[str, Any], output: str) -> None:
    """An import that failed for want of a variable, or on a write the read-only image
    refused: the error names what to add, not the app target."""
    given = {name for name, _ in (*plan.env, *plan.check_env)}
    missing = [str(n) for n in found.get("missing_env") or () if str(n) not in given]
    if missing:
        raise attach(missing_variables_error(plan, missing, str(found.get("error", ""))), output)
    unwritable = found.get("unwritable")
    if isinstance(unwritable, dict) and unwritable.get("directory"):
        raise attach(unwritable_error(plan, unwritable, str(found.get("error", ""))), output)


def _names(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def missing_variables_error(plan: BuildPlan, names: list[str], error: str) -> AppCheckError:
    plural = "s" if len(names) > 1 else ""
    lines = "\n".join(f'{name} = "placeholder"' for name in names)
    return AppCheckError(
        f"The app needs the environment variable{plural} {_names(names)} when it is imported, "
        f"and the build does not set {'them' if plural else 'it'} (the last lines of the "
        f"failure:\n{_last_lines(error)}\n)",
        hint=(
            f"Give the build placeholder values in {plan.project.pyproject}:\n"
            f"[tool.pydeploy.check-env]\n{lines}\n"
            "(any values the app's settings accept; they exist only while the build imports "
            "the app, never in the image: the real ones come at run time). A value the image "
            "should carry belongs in `[tool.pydeploy.env]` instead."
        ),
    )


def unwritable_error(plan: BuildPlan, found: dict[str, Any], error: str) -> AppCheckError:
    path, directory = str(found.get("path")), str(found["directory"])
    message = (
        f"The app writes {path} when it is imported, and the image refused it "
        f"({found.get('error', 'read-only')}): the image runs with a read-only root "
        f"filesystem, and its files belong to root (the last lines of the failure:\n"
        f"{_last_lines(error)}\n)"
    )
    entry = writable.entry_for(directory)
    why = writable.problem(entry)
    if why is not None:
        return AppCheckError(
            message,
            hint=(
                f"{directory} cannot be made writable (`tool.pydeploy.writable` {why}): "
                "write into a subdirectory (e.g. `logs/`) and list that in "
                "`tool.pydeploy.writable`, or write to /tmp."
            ),
        )
    listed = [*plan.project.config.writable, entry]
    line = "writable = [" + ", ".join(json.dumps(e) for e in listed) + "]"
    return AppCheckError(
        message,
        hint=(
            f"List the directory in `tool.pydeploy.writable`: add `{line}` to "
            f"[tool.pydeploy] in {plan.project.pyproject}. It is then owned by the runtime "
            "user in the image, and mounted writable (tmpfs, emptyDir) wherever the root "
            "filesystem is read-only."
        ),
    )


def _last_lines(error: str, count: int = 3) -> str:
    return "\n".join(line for line in error.strip().splitlines()[-count:])
