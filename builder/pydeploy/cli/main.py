"""The `pydeploy` command: its group, the global options, and the entry point.

The group is the one place where a failure becomes output and an exit code: every
PydeployError ends as one paragraph with its own code, anything else (a bug) as one line
naming it and the log file with its traceback (exit 1); `--debug` prints tracebacks.

The commands live one module per group (project, build, deploy, cache) and import what
they run only when they run, so `pydeploy --version` or `--help` stays fast."""

from __future__ import annotations

import gc
import sys
import traceback
from typing import Any, NoReturn

import click

from pydeploy import __version__
from pydeploy.cli import build, cache, deploy, project, render, session
from pydeploy.errors import EXIT_CODES, PydeployError


class _Group(click.Group):
    """Turns our exceptions into one-paragraph messages and exit codes."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        del standalone_mode  # errors are always handled here, never by click
        argv = sys.argv[1:] if args is None else list(args)
        debug = "--debug" in argv
        try:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except PydeployError as exc:
            if debug:
                traceback.print_exc()
            log = session.save_log("build-failure", exc.output) if exc.output else None
            render.failure(exc, log)
            sys.exit(exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
            render.interrupted()
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the one place a bug becomes a report
            _report_internal_error(exc, debug)


def _report_internal_error(exc: Exception, debug: bool) -> NoReturn:
    """Not a PydeployError, so a bug: one line naming it, the traceback in a log file
    (printed too with --debug), and how to report it; exit 1."""
    trace = traceback.format_exc()
    if debug:
        render.traceback_text(trace)
    log = session.save_log(
        "internal-error", f"pydeploy {__version__}\n{' '.join(sys.argv)}\n\n{trace}"
    )
    render.internal_error(exc, log, debug)
    sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pydeploy")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Build slim, reproducible, non-root images for Python web apps."""
    del debug


cli.help = (
    (cli.help or "")
    + "\n\nExit codes: 0 ok, 1 internal error, "
    + ", ".join(f"{code} {kind}" for kind, code in EXIT_CODES.items())
    + "."
)

for _command in (
    project.init,
    project.check,
    project.schema_cmd,
    build.plan,
    build.build,
    deploy.manifest_cmd,
    deploy.dockerfile_cmd,
    deploy.run_cmd,
    cache.inspect_cmd,
    cache.prune_cmd,
):
    cli.add_command(_command)


def main() -> None:
    try:
        cli(prog_name="pydeploy")
    finally:
        # The command is over (its output written, its exit code raised): the rest is
        # the interpreter's teardown, whose garbage collections walk every object the
        # imports made, ~0.1 s after a build. Frozen objects are skipped by them, and are
        # still freed by reference count, with their finalizers (cycles are not sought).
        gc.freeze()
