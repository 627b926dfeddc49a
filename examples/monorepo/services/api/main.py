"""The monorepo's ASGI service: a FastAPI app that uses the workspace library `shared`."""

from __future__ import annotations

import datetime as dt

import shared
from fastapi import FastAPI

STARTED = dt.datetime.now(dt.timezone.utc)

app = FastAPI(title="api")


@app.get("/")
async def index() -> dict[str, str]:
    return {"service": "api", "greeting": shared.greeting("api"), "uptime": shared.uptime(STARTED)}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "greeting": shared.greeting("api")}
