"""What `tool.pydeploy.server.extra-args` may hold, checked when the config is read.

The launcher appends these items to the server's command line (gunicorn: before the app
target; uvicorn: after it), so a malformed item gives an image whose server refuses to
start. Options unknown here are let through (newer server versions add options); what
is refused is what cannot work in any version: empty or NUL items, several words in one
item, stray positional arguments, a value-taking option with no value, options that make
the server exit or leave the foreground, and options pydeploy itself sets from keys.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from pydeploy.plan import servers


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# The option names of gunicorn 27 and uvicorn 0.54, by whether they take a value
# (gunicorn's `--proxy-protocol` takes an optional one: a flag here).
_GUNICORN_FLAGS = _words(
    "--capture-output --casefold-http-method --check-config --daemon "
    "--disable-redirect-access-to-syslog --do-handshake-on-connect --enable-backlog-metric "
    "--enable-stdio-inheritance --help --initgroups --log-syslog --no-control-socket "
    "--no-sendfile --permit-obsolete-folding --permit-unconventional-http-method "
    "--permit-unconventional-http-version --preload --print-config --proxy-protocol --reload "
    "--reuse-port --spew --strip-header-spaces --suppress-ragged-eofs --version -D -R -h -v "
)
_GUNICORN_VALUED = _words(
    "--access-logfile --access-logformat --asgi-disconnect-grace-period --asgi-lifespan "
    "--asgi-loop --backlog --bind --ca-certs --cert-reqs --certfile --chdir --ciphers "
    "--config --control-socket --control-socket-mode --dirty-app --dirty-graceful-timeout "
    "--dirty-threads --dirty-timeout --dirty-workers --dogstatsd-tags --env --error-logfile "
    "--forwarded-allow-ips --forwarder-headers --graceful-timeout --group --header-map "
    "--http-parser --http-protocols --http2-cleartext --http2-initial-window-size "
    "--http2-max-concurrent-streams --http2-max-frame-size --http2-max-header-list-size "
    "--keep-alive --keyfile --limit-request-field_size --limit-request-fields "
    "--limit-request-line --log-config --log-config-json --log-file --log-level "
    "--log-syslog-facility --log-syslog-prefix --log-syslog-to --logger-class --max-requests "
    "--max-requests-jitter --name --paste --paste-global --paster --pid --protocol "
    "--proxy-allow-from --pythonpath --reload-engine --reload-extra-file --root-path "
    "--ssl-version --statsd-host --statsd-prefix --threads --timeout --umask --user "
    "--uwsgi-allow-from --websocket-max-message-size --worker-class --worker-connections "
    "--worker-tmp-dir --workers -b -c -e -g -k -m -n -p -t -u -w "
)
_UVICORN_FLAGS = _words(
    "--access-log --date-header --factory --help --http2 --no-access-log --no-date-header "
    "--no-proxy-headers --no-server-header --no-use-colors --proxy-headers --reload "
    "--reset-contextvars --server-header --use-colors --version "
)
_UVICORN_VALUED = _words(
    "--app-dir --backlog --env-file --fd --forwarded-allow-ips "
    "--h11-max-incomplete-event-size --header --host --http --interface --lifespan "
    "--limit-concurrency --limit-max-requests --limit-max-requests-jitter --log-config "
    "--log-level --loop --port --reload-delay --reload-dir --reload-exclude --reload-include "
    "--root-path --ssl-ca-certs --ssl-cert-reqs --ssl-certfile --ssl-ciphers --ssl-keyfile "
    "--ssl-keyfile-password --ssl-version --timeout-graceful-shutdown --timeout-keep-alive "
    "--timeout-worker-healthcheck --uds --workers --ws --ws-max-queue --ws-max-size "
    "--ws-per-message-deflate --ws-ping-interval --ws-ping-timeout "
)


# Set by pydeploy; the image's PORT, WEB_CONCURRENCY and HEALTHCHECK rely on them.
_PORT = "`tool.pydeploy.port` (and PORT at run time)"
_WORKERS = "`tool.pydeploy.server.workers` (and WEB_CONCURRENCY at run time)"
_FACTORY = "`tool.pydeploy.app` (name the factory's call: `module:create_app()`)"
_OWNED = {
    "gunicorn": {"--bind": _PORT, "-b": _PORT, "--workers": _WORKERS, "-w": _WORKERS},
    "uvicorn": {
        "--host": _PORT, "--port": _PORT, "--uds": _PORT, "--fd": _PORT, "--workers": _WORKERS,
        "--factory": _FACTORY,
    },
}  # fmt: skip
# The server exits, or forks into the background, at once: the container stops.
_STOPS = {
    "gunicorn": {"--daemon", "-D", "--check-config", "--print-config", "--version", "-v",
                 "--help", "-h"},
    "uvicorn": {"--version", "--help"},
}  # fmt: skip
_FLAGS = {"gunicorn": _GUNICORN_FLAGS, "uvicorn": _UVICORN_FLAGS}
_VALUED = {"gunicorn": _GUNICORN_VALUED, "uvicorn": _UVICORN_VALUED}


def problem(server: str, args: Sequence[str]) -> str | None:
    """Why `args` cannot follow pydeploy's own options for `server` (`auto` and
    `gunicorn-uvicorn` run gunicorn), or None when they can."""
    family = servers.program_of(server)
    pending: str | None = None  # an option whose value may be the next item
    for number, arg in enumerate(args, 1):
        item = f"item {number} ({arg!r})" if len(arg) <= 40 else f"item {number}"
        why = _malformed(arg)
        if why:
            return f"{item} {why}"
        if not arg.startswith("-") or arg == "-":
            if pending is None:
                return (
                    f"{item} is neither an option nor an option's value; {family} would take "
                    "it as a second app (the app is `tool.pydeploy.app`)"
                )
            pending = None
            continue
        name, equals, _ = arg.partition("=")
        if any(ch.isspace() for ch in name):
            return f"{item} holds several words; give one word per item: {_split(arg)}"
        # gunicorn (argparse) also takes a short option's value attached: `-w4`.
        attached = family == "gunicorn" and not name.startswith("--") and len(name) > 2
        option = name[:2] if attached else name
        why = _refused(family, option)
        if why:
            return f"{item}: {why}"
        pending = None if equals or attached or option in _FLAGS[family] else option
    if pending in _VALUED[family]:
        return f"the last item `{pending}` needs a value after it"
    return None


def _malformed(arg: str) -> str | None:
    """What makes `arg` unusable wherever it stands."""
    if not arg.strip():
        return "is empty"
    if "\0" in arg:
        return "holds a NUL character"
    if arg == "--":
        return "ends the options, so what follows would be taken as the app"
    return None


def _refused(family: str, option: str) -> str | None:
    """Why pydeploy refuses `option` among the server's arguments."""
    if option in _OWNED[family]:
        return f"`{option}` is set by pydeploy from {_OWNED[family][option]}"
    if option in _STOPS[family]:
        return (
            f"`{option}` makes {family} exit or leave the foreground at once, so the "
            "container would stop"
        )
    return None


def _split(arg: str) -> str:
    try:
        words = shlex.split(arg)
    except ValueError:  # an unbalanced quote
        words = arg.split()
    return "[" + ", ".join(f'"{w}"' for w in words) + "]"
