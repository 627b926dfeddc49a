"""URL routes of the example project."""

from __future__ import annotations

from django.urls import path

from mysite import views

urlpatterns = [
    path("", views.index),
    path("healthz", views.healthz),
    path("slow", views.slow),
    path("pid", views.pid),
]
