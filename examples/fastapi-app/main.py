"""A minimal FastAPI app: the ASGI example pydeploy builds and serves with uvicorn."""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI

# /slow never sleeps longer than this, so a stray request cannot hold a connection forever.
MAX_SLEEP_SECONDS = 60.0

app = FastAPI(title="fastapi-app")


@app.get("/")
async def index() -> dict[str, str]:
    return {"app": "fastapi-app", "message": "hello"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/slow")
async def slow(seconds: float = 1.0) -> dict[str, float]:
    # Holds the request open so tests can check that a graceful shutdown lets it finish.
    seconds = min(max(seconds, 0.0), MAX_SLEEP_SECONDS)
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/pid")
async def pid() -> dict[str, int]:
    # Tells tests which worker process answered.
    return {"pid": os.getpid()}
