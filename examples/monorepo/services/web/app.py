"""The monorepo's WSGI service: a Flask app that uses the workspace library `shared`."""

from __future__ import annotations

import datetime as dt

import shared
from flask import Flask

STARTED = dt.datetime.now(dt.timezone.utc)

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, str]:
    return {"service": "web", "greeting": shared.greeting("web"), "uptime": shared.uptime(STARTED)}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "greeting": shared.greeting("web")}
