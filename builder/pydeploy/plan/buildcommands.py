"""Which commands run at build after the dependencies are installed, and why.

The user's `build-commands` run in order; before them, for a Django project whose settings
list `django.contrib.staticfiles` and set STATIC_ROOT, `collectstatic --noinput` (as the
Heroku buildpack does) unless `collectstatic = false` or a user command already runs it.
Pure: the source scan (detect.DjangoStatic) has read the settings.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from pydeploy.config.models import PydeployConfig
from pydeploy.errors import ConfigError
from pydeploy.plan.detect import DjangoStatic

KEY = "tool.pydeploy.build-commands"
SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class BuildCommand:
    argv: tuple[str, ...]  # exec form; a string command is `/bin/sh -c STRING`
    display: str  # as the user wrote it, for messages
    origin: str  # the key it came from, or why it was added
    env: tuple[tuple[str, str], ...] = ()  # beside the image env (DJANGO_SETTINGS_MODULE)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": list(self.argv),
            "display": self.display,
            "origin": self.origin,
            "env": dict(self.env),
        }


def plan_build_commands(
    config: PydeployConfig, django: DjangoStatic | None
) -> tuple[BuildCommand, ...]:
    user = tuple(_user_command(command, i) for i, command in enumerate(config.build_commands))
    auto = _collectstatic(config, django, user)
    return (*auto, *user)


def _user_command(command: str | list[str], index: int) -> BuildCommand:
    origin = f"{KEY}[{index}]"
    if isinstance(command, list):
        return BuildCommand(tuple(command), shlex.join(command), origin)
    return BuildCommand((*SHELL, command), command, origin)


def _collectstatic(
    config: PydeployConfig, django: DjangoStatic | None, user: tuple[BuildCommand, ...]
) -> tuple[BuildCommand, ...]:
    if config.collectstatic is False or any("collectstatic" in c.display for c in user):
        return ()
    if django is None:
        if config.collectstatic:
            raise ConfigError(
                "`tool.pydeploy.collectstatic` is true, but no Django settings module that "
                "lists `django.contrib.staticfiles` and sets STATIC_ROOT was found (through "
                "the DJANGO_SETTINGS_MODULE that manage.py or wsgi.py names).",
                hint=(
                    "Set STATIC_ROOT in the settings, or run the command yourself with "
                    '`build-commands = ["python manage.py collectstatic --noinput"]`.'
                ),
            )
        return ()
    why = (
        "tool.pydeploy.collectstatic"
        if config.collectstatic
        else f"automatic: Django staticfiles with STATIC_ROOT set in {django.source}"
    )
    # Without manage.py, django-admin's way: the settings module named in the environment.
    runner: tuple[str, ...] = ("manage.py",) if django.manage_py else ("-m", "django")
    argv = ("python", *runner, "collectstatic", "--noinput")
    env = () if django.manage_py else (("DJANGO_SETTINGS_MODULE", django.settings),)
    return (BuildCommand(argv, shlex.join(argv), why, env),)
