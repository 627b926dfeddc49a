"""The example's four JSON routes."""

from __future__ import annotations

import os
import time

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

# /slow never sleeps longer than this, so a stray request cannot pin a worker forever.
MAX_SLEEP_SECONDS = 60.0


@require_GET
def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "django-app", "message": "hello"})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def slow(request: HttpRequest) -> JsonResponse:
    # Holds the request open so tests can check that a graceful shutdown lets it finish.
    try:
        seconds = float(request.GET.get("seconds", "1"))
    except ValueError:
        return JsonResponse({"error": "seconds must be a number"}, status=400)
    seconds = min(max(seconds, 0.0), MAX_SLEEP_SECONDS)
    time.sleep(seconds)
    return JsonResponse({"slept": seconds})


@require_GET
def pid(request: HttpRequest) -> JsonResponse:
    # Tells tests which worker process answered.
    return JsonResponse({"pid": os.getpid()})
