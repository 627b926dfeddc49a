"""A minimal Flask app: the WSGI example pydeploy builds and serves with gunicorn."""

from __future__ import annotations

import os
import time

from flask import Flask, request

# /slow never sleeps longer than this, so a stray request cannot pin a worker forever.
MAX_SLEEP_SECONDS = 60.0

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, str]:
    return {"app": "flask-app", "message": "hello"}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/slow")
def slow() -> tuple[dict[str, str], int] | dict[str, float]:
    # Holds the request open so tests can check that a graceful shutdown lets it finish.
    try:
        seconds = float(request.args.get("seconds", "1"))
    except ValueError:
        return {"error": "seconds must be a number"}, 400
    seconds = min(max(seconds, 0.0), MAX_SLEEP_SECONDS)
    time.sleep(seconds)
    return {"slept": seconds}


@app.get("/pid")
def pid() -> dict[str, int]:
    # Tells tests which worker process answered.
    return {"pid": os.getpid()}
