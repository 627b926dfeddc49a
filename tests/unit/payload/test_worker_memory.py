"""What one worker costs: the app check's in-process measurement (builder_script, run here
on the host's own /proc) and the estimate the image records (pydeploy.plan.memory): margins,
rounding, origins, labels and launch.json keys."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pydeploy.payload import builder_script, launcher
from pydeploy.plan import memory, servers
from pydeploy.plan.memory import WorkerMemory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MiB_KIB = 1024

# --------------------------------------------------------------------------- measurement


def test_status_prefers_private_anonymous_memory() -> None:
    status = "Name:\tpython3\nVmRSS:\t   30000 kB\nRssAnon:\t   21000 kB\nRssFile:\t9000 kB\n"
    assert builder_script.status_kib(status) == 21000
    # Kernels before 4.5 have no RssAnon: the whole resident set, a safe over-estimate.
    assert builder_script.status_kib("VmRSS:\t   30000 kB\n") == 30000
    assert builder_script.status_kib("Name:\tpython3\n") is None


def test_this_process_can_be_measured() -> None:
    kib = builder_script.anon_kib()
    assert kib is not None
    assert kib > 1024  # an interpreter with pytest loaded holds more than 1 MiB


def test_wsgi_request_is_a_complete_get_of_the_health_path() -> None:
    seen: dict[str, Any] = {}
    closed: list[bool] = []

    class Body(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        seen.update(environ)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return Body([b"nope"])

    assert builder_script.serve_wsgi_once(app, "/healthz?deep=1") == "HTTP 404"
    assert (seen["REQUEST_METHOD"], seen["PATH_INFO"], seen["QUERY_STRING"]) == (
        "GET",
        "/healthz",
        "deep=1",
    )
    for key in ("SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "wsgi.input", "wsgi.errors"):
        assert key in seen
    assert closed == [True]  # PEP 3333: the server closes the body


def lifespan_app(ballast_mib: int) -> Any:
    """An ASGI app that loads `ballast_mib` of data at lifespan startup (a model, a cache),
    as many real apps do, and answers 200."""
    state: dict[str, bytes] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            state["ballast"] = b"x" * (ballast_mib * 2**20)  # written, so resident
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown never comes during the measurement
            return
        assert scope["path"] == "/healthz"
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


# In a fresh interpreter, as the app check runs it: in this long-lived test process, the
# ballast can land in heap pages that earlier tests already made resident, hiding it.
_LIFESPAN_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pydeploy.payload import builder_script
sys.path.insert(0, sys.argv[2])
from test_worker_memory import lifespan_app
measured = builder_script.measure_worker(
    lifespan_app(32), "asgi", {"path": "/healthz", "request": True}, {}
)
print(json.dumps(measured))
"""


def test_asgi_measurement_includes_lifespan_startup() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _LIFESPAN_PROBE, str(Path(builder_script.__file__).parents[2]),
         str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout)
    assert measured["request"] == "HTTP 200"
    assert measured["path"] == "/healthz"
    assert measured["worker_kib"] - measured["imported_kib"] >= 30 * MiB_KIB


def test_asgi_app_without_lifespan_support_is_still_served() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http")  # what servers treat as "lifespan unsupported"
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert builder_script.serve_asgi_once(app, "/") == "HTTP 204"


@pytest.fixture
def blocked() -> Iterator[threading.Event]:
    """An event a hanging app waits on; set at teardown so its thread ends."""
    event = threading.Event()
    yield event
    event.set()


def test_a_hanging_first_request_is_measured_as_far_as_it_got(
    monkeypatch: pytest.MonkeyPatch, blocked: threading.Event
) -> None:
    monkeypatch.setattr(builder_script, "FIRST_REQUEST_TIMEOUT", 0.1)

    def app(_environ: dict[str, Any], _start_response: Callable[..., Any]) -> list[bytes]:
        blocked.wait()  # a database the builder cannot reach
        return []

    measured = builder_script.measure_worker(app, "wsgi", {"path": "/"}, {})
    assert measured["request"] == "timed out after 0.1 s"
    assert measured["worker_kib"] > 0


def test_a_failing_first_request_is_noted_not_fatal() -> None:
    def app(_environ: dict[str, Any], _start_response: Callable[..., Any]) -> list[bytes]:
        raise ConnectionRefusedError("db")

    measured = builder_script.measure_worker(app, "wsgi", {"path": "/"}, {})
    assert measured["request"] == "raised ConnectionRefusedError"


def test_configured_worker_memory_sends_no_request() -> None:
    calls: list[str] = []

    def app(_environ: dict[str, Any], _start_response: Callable[..., Any]) -> list[bytes]:
        calls.append("called")
        return []

    measured = builder_script.measure_worker(app, "wsgi", {"path": "/", "request": False}, {})
    assert calls == []
    assert "request" not in measured
    assert measured["worker_kib"] > 0


@pytest.mark.parametrize(
    ("server", "modules"),
    [
        ("gunicorn", ["gunicorn.app.wsgiapp", "gunicorn.workers.sync", "gunicorn.workers.gthread"]),
        ("gunicorn-uvicorn", ["gunicorn.app.wsgiapp", "uvicorn_worker"]),
        ("uvicorn", ["uvicorn.main", "uvicorn.supervisors"]),
        ("auto", ["gunicorn.app.wsgiapp", "gunicorn.workers.sync", "gunicorn.workers.gthread",
                  "uvicorn_worker"]),
    ],
)  # fmt: skip
def test_the_master_is_measured_with_the_servers_modules(server: str, modules: list[str]) -> None:
    # The host's server table decides them; the job carries them to the builder script.
    job = {"server": server, "modules": list(servers.worker_modules(server))}
    assert builder_script.server_modules(job) == modules


def test_missing_server_modules_are_skipped() -> None:
    assert builder_script.import_quietly(["json", "no_such_module_pydeploy"]) == ["json"]


# --------------------------------------------------------------------------- estimate

# Raw numbers the check measured for examples/fastapi-app (KiB).
FASTAPI = {"baseline_kib": 9716, "server_kib": 19880, "worker_kib": 34964, "request": "HTTP 200"}


def test_estimate_adds_margins_and_rounds_up_to_steps() -> None:
    estimate = memory.estimate({**FASTAPI, "path": "/healthz"}, server="gunicorn-uvicorn",
                               configured=None)  # fmt: skip
    # 34964 KiB x 1.25 = 42.7 MiB -> 44; 19880 KiB + 8 MiB = 27.4 MiB -> 28.
    assert estimate == WorkerMemory(44, 28, memory.MEASURED, "first request GET /healthz: HTTP 200")


def test_estimate_is_stable_across_small_run_to_run_differences() -> None:
    # RssAnon differs by a few KiB between runs: the recorded numbers (and image) must not.
    jittered = {**FASTAPI, "server_kib": 19868, "worker_kib": 34976}
    assert memory.estimate(jittered, server="gunicorn-uvicorn", configured=None) == (
        memory.estimate(FASTAPI, server="gunicorn-uvicorn", configured=None)
    )


def test_uvicorn_counts_the_launcher_and_the_resource_tracker() -> None:
    gunicorn = memory.estimate(FASTAPI, server="gunicorn-uvicorn", configured=None)
    uvicorn = memory.estimate(FASTAPI, server="uvicorn", configured=None)
    assert gunicorn.master_mib is not None
    assert uvicorn.master_mib is not None
    # Two bare interpreters of ~9.5 MiB more, rounded to the step.
    assert uvicorn.master_mib - gunicorn.master_mib == 20


def test_configured_worker_memory_overrides_the_measurement() -> None:
    estimate = memory.estimate(FASTAPI, server="gunicorn-uvicorn", configured=100)
    assert estimate == WorkerMemory(100, 28, memory.CONFIGURED)


def test_nothing_measured_means_nothing_recorded() -> None:
    assert memory.estimate(None, server="gunicorn", configured=None) == WorkerMemory(
        None, None, None
    )
    assert memory.labels(WorkerMemory(None, None, None)) == {}
    assert memory.describe(WorkerMemory(None, None, None)) == "worker memory not measured"


def test_launch_keys_and_labels_agree() -> None:
    estimate = WorkerMemory(44, 28, memory.MEASURED)
    keys = memory.launch_keys(estimate, configured=None)
    assert keys == {
        "worker_memory_mb": 44,
        "worker_memory_origin": "measured at build",
        "master_memory_mb": 28,
    }
    assert memory.labels(estimate) == {
        "pydeploy.worker-memory-mib": "44",
        "pydeploy.worker-memory-origin": "measured at build",
        "pydeploy.master-memory-mib": "28",
    }
    # The launcher reads what pydeploy writes.
    parsed = launcher.parse_config(
        {"app": "a:b", "server": "gunicorn", "healthcheck_path": "/healthz", **keys}
    )
    assert launcher.memory_budget(parsed) == launcher.MemoryBudget(44, 28, "measured at build")
    # Before the check (plans, an ejected Dockerfile) only the explicit setting is known.
    assert memory.launch_keys(None, configured=64) == {
        "worker_memory_mb": 64,
        "worker_memory_origin": "server.worker-memory",
        "master_memory_mb": None,
    }


@pytest.mark.parametrize(
    "doc",
    [
        {"worker_mib": 44, "master_mib": 28, "origin": "measured at build", "note": None},
        {"worker_mib": None, "master_mib": None, "origin": None, "note": None},
    ],
)
def test_cached_estimates_round_trip(doc: dict[str, Any]) -> None:
    restored = WorkerMemory.from_doc(doc)
    assert restored is not None
    assert restored.to_doc() == doc


@pytest.mark.parametrize(
    "doc", [None, [], {"worker_mib": "44"}, {"worker_mib": 44, "origin": "guessed"}]
)
def test_damaged_cache_entries_are_measured_again(doc: object) -> None:
    assert WorkerMemory.from_doc(doc) is None
