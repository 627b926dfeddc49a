"""The healthcheck's path and rule, decided at planning.

The default must never mark a healthy app unhealthy. An explicit `healthcheck.path` is
the user's promise of a 2xx/3xx answer. Without one, a health route that detection finds
in the source is probed (2xx/3xx, as any health endpoint answers); else `/` is, and any
answer below 500 counts as alive: an API without `/` answers 404 and Django answers 400
to a Host outside ALLOWED_HOSTS, yet both servers are up. Django's detected routes use
that rule too, since ALLOWED_HOSTS turns every path into a 400 for the probe's
127.0.0.1. The image's HEALTHCHECK, the Kubernetes probes and the app check's
measurement request all follow the decision recorded here.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydeploy.config.models import HealthcheckConfig
from pydeploy.plan.detect import Route, scan_routes
from pydeploy.plan.launch import Healthcheck

# Last path segments that name a health endpoint, best first; a route's path has at most
# MAX_SEGMENTS segments (`/api/v1/health`), so a `/orders/<id>/status` page is not one.
HEALTH_NAMES = (
    "healthz",
    "health",
    "livez",
    "healthcheck",
    "health-check",
    "health_check",
    "ping",
    "status",
)
MAX_SEGMENTS = 3
# Files without one of these words are never parsed.
_WANTED = re.compile(b"health|livez|ping|status")
HEALTHY_2XX_3XX = 400
HEALTHY_BELOW_500 = 500
FALLBACK_PATH = "/"
FALLBACK_WHY = (
    "no health route found in the source and no healthcheck.path: any answer below 500 "
    "from `/` counts as alive (an API without `/` answers 404, Django 400 for an "
    "unknown Host)"
)


def _rank(route: Route) -> tuple[int, int] | None:
    segments = [s for s in route.path.split("/") if s]
    if not segments or len(segments) > MAX_SEGMENTS:
        return None
    name = segments[-1].lower()
    return (HEALTH_NAMES.index(name), len(segments)) if name in HEALTH_NAMES else None


def health_route(routes: tuple[Route, ...]) -> Route | None:
    """The best health route: by name (HEALTH_NAMES order), then the shortest path,
    then the first in the source."""
    ranked = [(rank, i, r) for i, r in enumerate(routes) if (rank := _rank(r)) is not None]
    return min(ranked, key=lambda item: (item[0], item[1]))[2] if ranked else None


def choose(config: HealthcheckConfig, project_dir: Path) -> Healthcheck:
    """The probe the image, the manifests and the app check use (also when the image's
    HEALTHCHECK is disabled: the manifests and the app check still probe)."""
    timing = {
        "interval": config.interval,
        "timeout": config.timeout,
        "start_period": config.start_period,
        "retries": config.retries,
    }
    if config.path is not None:
        origin = "tool.pydeploy.healthcheck.path: a 2xx or 3xx answer is healthy"
        return Healthcheck(config.path, **timing, healthy_below=HEALTHY_2XX_3XX, origin=origin)
    route = health_route(scan_routes(project_dir, _WANTED))
    if route is None:
        return Healthcheck(
            FALLBACK_PATH, **timing, healthy_below=HEALTHY_BELOW_500, origin=FALLBACK_WHY
        )
    if route.framework == "django":
        rule, below = "any answer below 500 (ALLOWED_HOSTS may answer 400)", HEALTHY_BELOW_500
    else:
        rule, below = "a 2xx or 3xx answer is healthy", HEALTHY_2XX_3XX
    return Healthcheck(
        route.path, **timing, healthy_below=below, origin=f"detected: {route.where}; {rule}"
    )
