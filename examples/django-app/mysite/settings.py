"""Settings for the example project: everything that differs between a laptop and a
container comes from the environment, and nothing needs a database."""

from __future__ import annotations

import os

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"

# The fallback is only good for local runs: set DJANGO_SECRET_KEY in any real deployment.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-dev-only-key-do-not-use-in-production"
)

# Default `*` because the container cannot know the hostname it will be reached by
# (a load balancer, a Kubernetes service, 127.0.0.1 in tests). Behind a proxy that
# checks Host, or in production, set a comma-separated list.
ALLOWED_HOSTS = [
    host.strip() for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",") if host.strip()
]

# No models, sessions or auth: the example serves JSON only and needs no database.
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

USE_TZ = True
TIME_ZONE = "UTC"

# Container logs go to stderr, where the engine collects them.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
    "root": {"handlers": ["stderr"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
