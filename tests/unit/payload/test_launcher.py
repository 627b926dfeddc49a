"""The runtime launcher: worker sizing from fake cgroup trees, argv per server mode, env
validation, the healthcheck against a real loopback server, the PID-1 supervisor with real
child processes, and exec (the server takes over the launcher's PID)."""

from __future__ import annotations

import ast
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from pydeploy.payload import launcher
from pydeploy.payload.launcher import CpuQuota, LaunchConfig, MemoryLimit, System

if TYPE_CHECKING:
    from collections.abc import Iterator

SCRIPT = Path(launcher.__file__)

BASE_CONFIG: dict[str, object] = {
    "app": "myapp.wsgi:application",
    "interface": "wsgi",
    "server": "gunicorn",
    "port": 8000,
    "workers": None,
    "worker_memory_mb": None,
    "threads": None,
    "timeout": 30,
    "graceful_timeout": 25,
    "keepalive": 5,
    "max_requests": 0,
    "max_requests_jitter": 0,
    "forwarded_allow_ips": None,
    "proxy_headers": True,
    "extra_args": [],
    "app_dir": "/app",
    "venv": "/opt/venv",
    "healthcheck_path": "/healthz",
    "healthcheck_timeout": 3,
}


def config(**overrides: object) -> LaunchConfig:
    return launcher.parse_config({**BASE_CONFIG, **overrides})


def write_config(tmp_path: Path, **overrides: object) -> Path:
    path = tmp_path / "launch.json"
    path.write_text(json.dumps({**BASE_CONFIG, **overrides}), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- fake cgroup trees


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n", encoding="utf-8")


def v2_system(tmp_path: Path, proc_path: str, files: dict[str, str], affinity: int) -> System:
    """A unified (v2) hierarchy mounted at the root, as in a cgroupns container or on a host."""
    root = tmp_path / "cgroup"
    write_files(root, {"cgroup.controllers": "cpu memory", **files})
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{proc_path}\n", encoding="utf-8")
    return System(cgroup_root=root, proc_cgroup=proc, affinity=affinity)


def v1_system(
    tmp_path: Path, proc_lines: list[str], files: dict[str, str], affinity: int
) -> System:
    """A v1 (or hybrid) layout: a tmpfs root holding one directory per controller mount."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    write_files(root, files)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("\n".join(proc_lines) + "\n", encoding="utf-8")
    return System(cgroup_root=root, proc_cgroup=proc, affinity=affinity)


DOCKER_ID = "/docker/0123abcd"
DOCKER_V1_LINES = [f"4:memory:{DOCKER_ID}", f"2:cpu,cpuacct:{DOCKER_ID}", f"0::{DOCKER_ID}"]


def auto_workers(system: System, **overrides: object) -> launcher.WorkerDecision:
    return launcher.plan_launch(config(**overrides), {}, system).workers


def test_v2_max_means_no_limit_so_affinity_decides(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"cpu.max": "max 100000"}, affinity=2)
    assert launcher.cgroup_cpu_quota(system.cgroup_root, system.proc_cgroup) is None
    decision = auto_workers(system)
    assert decision.count == 5
    assert decision.reason == "2*2+1 from CPU affinity 2; no cgroup CPU quota"


def test_v2_fractional_quota_rounds_up(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"cpu.max": "150000 100000"}, affinity=8)
    assert launcher.cgroup_cpu_quota(system.cgroup_root, system.proc_cgroup) == CpuQuota(
        1.5, "cgroup v2"
    )
    decision = auto_workers(system)
    assert decision.count == 5
    assert decision.reason == "2*2+1 from cgroup v2 CPU quota 1.5; affinity 8"


def test_v2_nested_path_takes_the_tightest_ancestor_limit(tmp_path: Path) -> None:
    files = {
        "kubepods/cpu.max": "400000 100000",
        "kubepods/pod1/cpu.max": "100000 100000",
        "kubepods/pod1/ctr/cpu.max": "max 100000",
    }
    system = v2_system(tmp_path, "/kubepods/pod1/ctr", files, affinity=16)
    assert auto_workers(system).count == 3


def test_v1_quota_minus_one_means_no_limit(tmp_path: Path) -> None:
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"}
    system = v1_system(tmp_path, DOCKER_V1_LINES, files, affinity=4)
    assert launcher.cgroup_cpu_quota(system.cgroup_root, system.proc_cgroup) is None
    assert auto_workers(system).count == 9


def test_v1_container_path_missing_under_mount_falls_back_to_mount_root(tmp_path: Path) -> None:
    # Inside Docker on v1, /proc/self/cgroup shows /docker/<id>, but the mount's root already
    # is the container's cgroup: what `docker run --cpus 1` writes.
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "100000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}
    system = v1_system(tmp_path, DOCKER_V1_LINES, files, affinity=2)
    decision = auto_workers(system)
    assert decision.count == 3
    assert decision.reason == "2*1+1 from cgroup v1 CPU quota 1.0; affinity 2"


def test_v1_separate_cpu_mount_on_a_hybrid_host(tmp_path: Path) -> None:
    # This machine's layout: cpu and cpuacct mounted apart, plus a `0::` line whose unified
    # hierarchy holds no cpu controller (the root is a tmpfs, no cgroup.controllers).
    lines = ["2:cpuacct:/docker/x", "1:cpu:/docker/x", "0::/docker/x"]
    files = {
        "cpu/docker/x/cpu.cfs_quota_us": "200000",
        "cpu/docker/x/cpu.cfs_period_us": "100000",
        "cpu/cpu.cfs_quota_us": "-1",
        "cpu/cpu.cfs_period_us": "100000",
        "unified/docker/x/cpu.max": "50000 100000",  # must be ignored: not mounted at the root
    }
    system = v1_system(tmp_path, lines, files, affinity=8)
    assert launcher.cgroup_cpu_quota(system.cgroup_root, system.proc_cgroup) == CpuQuota(
        2.0, "cgroup v1"
    )
    assert auto_workers(system).count == 5


def test_affinity_smaller_than_quota_wins(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"cpu.max": "400000 100000"}, affinity=1)
    decision = auto_workers(system)
    assert decision.count == 3
    assert decision.reason == "2*1+1 from CPU affinity 1; cgroup v2 CPU quota 4.0"


def test_quota_below_one_cpu_still_gives_one_cpu() -> None:
    assert launcher.effective_cpus(4, 0.25) == 1
    assert launcher.effective_cpus(4, None) == 4


def test_web_concurrency_wins_over_config_and_quota(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"cpu.max": "100000 100000"}, affinity=2)
    plan = launcher.plan_launch(config(workers=7), {"WEB_CONCURRENCY": "11"}, system)
    assert plan.workers.count == 11
    assert plan.workers.reason == "WEB_CONCURRENCY=11"
    assert plan.argv[plan.argv.index("--workers") + 1] == "11"


def test_configured_workers_beat_the_cpu_count(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"cpu.max": "100000 100000"}, affinity=2)
    decision = auto_workers(system, workers=7)
    assert decision.count == 7
    assert decision.reason == "configured workers = 7"


def test_empty_web_concurrency_counts_as_unset(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"cpu.max": "max 100000"}, affinity=2)
    assert launcher.plan_launch(config(), {"WEB_CONCURRENCY": ""}, system).workers.count == 5


MiB = 2**20
# What the app check records for examples/fastapi-app (see pydeploy.plan.memory).
MEASURED = {
    "worker_memory_mb": 44,
    "master_memory_mb": 28,
    "worker_memory_origin": "measured at build",
}
CPU_5 = "2*2+1 from CPU affinity 2; no cgroup CPU quota"


@pytest.mark.parametrize(
    ("limit", "master", "worker", "allowed"),
    [(128, 28, 44, 2), (512, 28, 44, 11), (64, 28, 44, 0), (72, 28, 44, 1), (20, 28, 44, 0)],
)
def test_memory_allows_what_fits_next_to_the_master(
    limit: int, master: int, worker: int, allowed: int
) -> None:
    assert launcher.memory_allows(limit, master, worker) == allowed


def test_memory_limit_caps_auto_workers_cgroup_v2(tmp_path: Path) -> None:
    # The limit sits on the pod; the container's own cgroup says "max".
    files = {"cpu.max": "max 100000", "pod/memory.max": str(128 * MiB), "pod/ctr/memory.max": "max"}
    system = v2_system(tmp_path, "/pod/ctr", files, affinity=2)
    assert launcher.cgroup_memory_limit(system.cgroup_root, system.proc_cgroup) == MemoryLimit(
        128, "cgroup v2"
    )
    decision = auto_workers(system, **MEASURED)
    assert decision.count == 2
    assert decision.reason == (
        f"cpu allows 5: {CPU_5}; memory allows 2: cgroup v2 limit 128 MiB, "
        "~28 MiB master + ~44 MiB per worker measured at build"
    )
    assert decision.warning is None


def test_memory_limit_caps_auto_workers_cgroup_v1(tmp_path: Path) -> None:
    # Docker on v1: /proc/self/cgroup names /docker/<id>, the mount root is the container's.
    files = {"memory/memory.limit_in_bytes": str(128 * MiB)}
    system = v1_system(tmp_path, DOCKER_V1_LINES, files, affinity=2)
    decision = auto_workers(system, **MEASURED)
    assert decision.count == 2
    assert "memory allows 2: cgroup v1 limit 128 MiB" in decision.reason


def test_memory_limit_takes_the_tightest_v1_ancestor(tmp_path: Path) -> None:
    lines = ["4:memory:/kubepods/pod1/ctr", "0::/kubepods/pod1/ctr"]
    files = {
        "memory/memory.limit_in_bytes": "9223372036854771712",
        "memory/kubepods/pod1/memory.limit_in_bytes": str(256 * MiB),
        "memory/kubepods/pod1/ctr/memory.limit_in_bytes": str(512 * MiB),
    }
    system = v1_system(tmp_path, lines, files, affinity=8)
    assert auto_workers(system, **MEASURED).count == (256 - 28) // 44


def test_cpu_decides_when_memory_is_plentiful(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"memory.max": str(512 * MiB)}, affinity=2)
    decision = auto_workers(system, **MEASURED)
    assert decision.count == 5
    assert "memory allows 11" in decision.reason


def test_when_not_even_one_worker_fits_one_starts_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    system = v2_system(tmp_path, "/", {"memory.max": str(64 * MiB)}, affinity=2)
    decision = auto_workers(system, **MEASURED)
    assert decision.count == 1
    assert "memory allows 0: cgroup v2 limit 64 MiB" in decision.reason
    assert decision.warning is not None
    assert "starting 1 worker anyway" in decision.warning
    assert "at least 72 MiB" in decision.warning
    # main() prints it on its own line, after the startup line.
    path = write_config(tmp_path, **MEASURED)
    code = launcher.main(["--config", str(path), "--print-command"], environ={}, system=system)
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("pydeploy-launcher: gunicorn, 1 worker (cpu allows 5")
    assert err[1].startswith("pydeploy-launcher: warning: the cgroup v2 memory limit of 64 MiB")


def test_unlimited_memory_values_mean_no_limit(tmp_path: Path) -> None:
    v1_files = {"memory/memory.limit_in_bytes": "9223372036854771712"}
    system = v1_system(tmp_path / "v1", DOCKER_V1_LINES, v1_files, affinity=2)
    assert launcher.cgroup_memory_limit(system.cgroup_root, system.proc_cgroup) is None
    decision = auto_workers(system, **MEASURED)
    assert (decision.count, decision.reason) == (5, CPU_5)
    v2 = v2_system(tmp_path / "v2", "/", {"memory.max": "max"}, affinity=2)
    assert launcher.cgroup_memory_limit(v2.cgroup_root, v2.proc_cgroup) is None
    assert auto_workers(v2, **MEASURED).count == 5


def test_without_an_estimate_the_limit_is_named_but_unused(tmp_path: Path) -> None:
    # launch.json from before the measurement (or an ejected Dockerfile's).
    system = v2_system(tmp_path, "/", {"memory.max": str(128 * MiB)}, affinity=2)
    decision = auto_workers(system)
    assert decision.count == 5
    assert decision.reason == (
        f"{CPU_5}; cgroup v2 memory limit 128 MiB unused: no per-worker estimate"
    )


def test_configured_worker_memory_counts_a_default_master(tmp_path: Path) -> None:
    system = v2_system(tmp_path, "/", {"memory.max": str(1024 * MiB)}, affinity=8)
    decision = auto_workers(
        system, worker_memory_mb=256, worker_memory_origin="server.worker-memory"
    )
    assert decision.count == (1024 - launcher.DEFAULT_MASTER_MEMORY_MB) // 256
    assert decision.reason.endswith(
        f"~{launcher.DEFAULT_MASTER_MEMORY_MB} MiB master + ~256 MiB per worker "
        "from server.worker-memory"
    )


@pytest.mark.parametrize("how", ["env", "config"])
def test_explicit_counts_are_kept_but_warned_about(tmp_path: Path, how: str) -> None:
    system = v2_system(tmp_path, "/", {"memory.max": str(128 * MiB)}, affinity=2)
    environ = {"WEB_CONCURRENCY": "4"} if how == "env" else {}
    overrides: dict[str, object] = {**MEASURED, "workers": None if how == "env" else 4}
    decision = launcher.plan_launch(config(**overrides), environ, system).workers
    assert decision.count == 4
    assert decision.warning is not None
    assert "4 workers need ~204 MiB" in decision.warning
    fits = launcher.plan_launch(config(**{**overrides, "workers": 2}), {}, system).workers
    assert (fits.count, fits.warning) == (2, None)


def test_launch_json_memory_keys_are_validated() -> None:
    for bad in ({"master_memory_mb": "28"}, {"worker_memory_mb": 0}, {"worker_memory_origin": 3}):
        with pytest.raises(launcher.LaunchError, match=r"launch\.json"):
            config(**bad)


def test_missing_cgroup_files_fall_back_to_affinity(tmp_path: Path) -> None:
    system = System(cgroup_root=tmp_path / "nope", proc_cgroup=tmp_path / "no-proc", affinity=3)
    assert auto_workers(system).count == 7


# --------------------------------------------------------------------------- environment errors


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEB_CONCURRENCY", "abc"),
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "-2"),
        ("WEB_CONCURRENCY", "1.5"),
        ("PORT", "0"),
        ("PORT", "x"),
        ("PORT", "65536"),
    ],
)
def test_invalid_env_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    path = write_config(tmp_path)
    code = launcher.main(["--config", str(path), "--print-command"], environ={name: value})
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert f"{name}={value!r}" in err
    expected = "positive integer" if name == "WEB_CONCURRENCY" else "from 1 to 65535"
    assert expected in err


def test_invalid_env_from_the_real_script_has_no_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    env = {**os.environ, "WEB_CONCURRENCY": "abc"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        (
            "pydeploy-launcher: invalid WEB_CONCURRENCY='abc': must be a positive integer "
            "(1, 2, 3, ...) or unset to size workers from the container's CPUs"
        )
    ]


def test_port_env_overrides_the_configured_port(tmp_path: Path) -> None:
    system = System(cgroup_root=tmp_path, proc_cgroup=tmp_path / "none", affinity=1)
    plan = launcher.plan_launch(config(), {"PORT": "9123"}, system)
    assert plan.port == 9123
    assert "0.0.0.0:9123" in plan.argv


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"server": "hypercorn"}, "'server' must be one of"),
        ({"interface": "asgi"}, "serves wsgi apps"),
        ({"workers": 0}, "'workers' must be an integer >= 1"),
        ({"timeout": True}, "'timeout' must be an integer"),
        ({"extra_args": "--foo"}, "'extra_args' must be a list of strings"),
        ({"app": ""}, "'app' must be a non-empty string"),
    ],
)
def test_invalid_launch_json_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, object], fragment: str
) -> None:
    path = write_config(tmp_path, **overrides)
    assert launcher.main(["--config", str(path), "--print-command"], environ={}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert fragment in err


def test_config_path_from_env_and_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, workers=4)
    env = {launcher.CONFIG_ENV: str(path)}
    assert launcher.main(["--print-command"], environ=env) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 4
    missing = tmp_path / "missing.json"
    assert launcher.main(["--config", str(missing)], environ={}) == 2
    assert f"cannot read the launch config {missing}" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher.main(["--serve"], environ={}) == 2
    assert "unexpected option '--serve'" in capsys.readouterr().err


# --------------------------------------------------------------------------- argv per server


def test_wsgi_default_is_the_async_worker_with_four_threads() -> None:
    argv = launcher.gunicorn_argv(config(), workers=3, port=8000, gunicorn_version=(23, 0, 0))
    assert argv == [
        "/opt/venv/bin/gunicorn",
        "--bind", "0.0.0.0:8000",
        "--workers", "3",
        "--worker-class", "pydeploy_workers.WSGIWorker", "--threads", "4",
        "--pythonpath", "/opt/pydeploy/lib",
        "--chdir", "/app",
        "--worker-tmp-dir", "/dev/shm",
        "--access-logfile", "-",
        "--logger-class", "pydeploy_accesslog.GunicornLogger",
        "--error-logfile", "-",
        "--timeout", "30",
        "--graceful-timeout", "25",
        "--keep-alive", "5",
        "myapp.wsgi:application",
    ]  # fmt: skip


def test_async_wsgi_worker_takes_the_configured_threads() -> None:
    argv = launcher.gunicorn_argv(config(threads=1), workers=3, port=8000, gunicorn_version=None)
    assert argv[argv.index("--threads") + 1] == "1"
    assert "pydeploy_workers.WSGIWorker" in argv


def test_default_graceful_timeout_fits_inside_docker_stop() -> None:
    cfg = launcher.parse_config({"app": "a:b", "server": "gunicorn", "healthcheck_path": None})
    assert cfg.graceful_timeout == launcher.DEFAULT_GRACEFUL_TIMEOUT < 10


def test_unknown_wsgi_worker_is_refused() -> None:
    with pytest.raises(launcher.LaunchError, match="'wsgi_worker' must be one of async, sync"):
        config(wsgi_worker="gevent")


def test_gunicorn_sync_argv() -> None:
    argv = launcher.gunicorn_argv(
        config(wsgi_worker="sync"), workers=3, port=8000, gunicorn_version=(23, 0, 0)
    )
    assert argv == [
        "/opt/venv/bin/gunicorn",
        "--bind", "0.0.0.0:8000",
        "--workers", "3",
        "--worker-class", "sync",
        "--pythonpath", "/opt/pydeploy/lib",
        "--chdir", "/app",
        "--worker-tmp-dir", "/dev/shm",
        "--access-logfile", "-",
        "--logger-class", "pydeploy_accesslog.GunicornLogger",
        "--error-logfile", "-",
        "--timeout", "30",
        "--graceful-timeout", "25",
        "--keep-alive", "5",
        "myapp.wsgi:application",
    ]  # fmt: skip


def test_gunicorn_gthread_argv_with_every_option() -> None:
    cfg = config(
        wsgi_worker="sync",
        threads=4,
        max_requests=1000,
        max_requests_jitter=50,
        forwarded_allow_ips="10.0.0.0/8,127.0.0.1",
        extra_args=["--log-level", "debug"],
    )
    argv = launcher.gunicorn_argv(cfg, workers=2, port=9000, gunicorn_version=(25, 1, 0))
    assert argv == [
        "/opt/venv/bin/gunicorn",
        "--bind", "0.0.0.0:9000",
        "--workers", "2",
        "--worker-class", "gthread", "--threads", "4",
        "--pythonpath", "/opt/pydeploy/lib",
        "--chdir", "/app",
        "--worker-tmp-dir", "/dev/shm",
        "--access-logfile", "-",
        "--logger-class", "pydeploy_accesslog.GunicornLogger",
        "--error-logfile", "-",
        "--timeout", "30",
        "--graceful-timeout", "25",
        "--keep-alive", "5",
        "--max-requests", "1000", "--max-requests-jitter", "50",
        "--forwarded-allow-ips", "10.0.0.0/8,127.0.0.1",
        "--no-control-socket",
        "--log-level", "debug",
        "myapp.wsgi:application",
    ]  # fmt: skip


def test_gunicorn_uvicorn_argv() -> None:
    cfg = config(app="api.main:app", interface="asgi", server="gunicorn-uvicorn", threads=8)
    argv = launcher.gunicorn_argv(
        cfg, workers=5, port=8000, gunicorn_version=None, worker_tmp_dir=None
    )
    assert argv == [
        "/opt/venv/bin/gunicorn",
        "--bind", "0.0.0.0:8000",
        "--workers", "5",
        "--worker-class", "pydeploy_workers.ASGIWorker",
        "--pythonpath", "/opt/pydeploy/lib",
        "--chdir", "/app",
        "--access-logfile", "-",
        "--logger-class", "pydeploy_accesslog.GunicornLogger",
        "--error-logfile", "-",
        "--timeout", "30",
        "--graceful-timeout", "25",
        "--keep-alive", "5",
        "api.main:app",
    ]  # fmt: skip


def test_gunicorn_without_proxy_headers_trusts_no_peer() -> None:
    cfg = config(proxy_headers=False, forwarded_allow_ips="10.0.0.0/8")
    argv = launcher.gunicorn_argv(cfg, workers=1, port=8000, gunicorn_version=None)
    assert argv[argv.index("--forwarded-allow-ips") + 1] == ""
    assert "10.0.0.0/8" not in argv


def test_uvicorn_argv() -> None:
    cfg = config(
        app="api.main:app",
        interface="asgi",
        server="uvicorn",
        forwarded_allow_ips="*",
        max_requests=500,
        max_requests_jitter=20,
        extra_args=["--no-server-header"],
    )
    argv = launcher.uvicorn_argv(cfg, workers=3, port=8080, uvicorn_version=(0, 41, 0))
    assert argv == [
        "/opt/venv/bin/uvicorn", "api.main:app",
        "--host", "0.0.0.0", "--port", "8080",  # noqa: S104
        "--workers", "3",
        "--app-dir", "/app",
        "--timeout-graceful-shutdown", "25",
        "--timeout-keep-alive", "5",
        "--proxy-headers",
        "--log-config", "/opt/pydeploy/lib/uvicorn_logging.json",
        "--forwarded-allow-ips", "*",
        "--limit-max-requests", "500", "--limit-max-requests-jitter", "20",
        "--no-server-header",
    ]  # fmt: skip
    older = launcher.uvicorn_argv(cfg, workers=3, port=8080, uvicorn_version=(0, 40, 0))
    assert "--limit-max-requests-jitter" not in older
    assert "--limit-max-requests" in older


def test_uvicorn_no_proxy_headers() -> None:
    cfg = config(app="a:app", interface="asgi", server="uvicorn", proxy_headers=False)
    argv = launcher.uvicorn_argv(cfg, workers=1, port=8000, uvicorn_version=None)
    assert "--no-proxy-headers" in argv
    assert "--proxy-headers" not in argv


def fake_dist_info(venv: Path, name: str, version: str) -> None:
    info = venv / "lib" / "python3.11" / "site-packages" / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )


@pytest.mark.parametrize(
    ("version", "expected"), [("25.1.0", True), ("27.0.1", True), ("25.0.3", False), (None, False)]
)
def test_control_socket_flag_follows_the_installed_gunicorn(
    tmp_path: Path, version: str | None, expected: bool
) -> None:
    venv = tmp_path / "venv"
    if version is not None:
        fake_dist_info(venv, "gunicorn", version)
    system = System(cgroup_root=tmp_path, proc_cgroup=tmp_path / "none", affinity=1)
    plan = launcher.plan_launch(config(venv=str(venv)), {}, system)
    assert ("--no-control-socket" in plan.argv) is expected
    assert plan.argv[0] == str(venv / "bin" / "gunicorn")


def test_installed_version_reads_metadata_and_ignores_other_distributions(tmp_path: Path) -> None:
    fake_dist_info(tmp_path, "gunicorn", "25.1.0rc1")
    fake_dist_info(tmp_path, "gunicorn_extra", "99.0")
    assert launcher.installed_version(tmp_path, "gunicorn") == (25, 1, 0)
    assert launcher.installed_version(tmp_path, "uvicorn") is None


# --------------------------------------------------------------------------- healthcheck


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, int]] = {"/healthz": 200, "/broken": 500, "/moved": 302}

    def do_GET(self) -> None:
        status = self.routes.get(self.path, 404)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://192.0.2.1/elsewhere")  # never reachable
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the healthcheck's own report is what the tests read."""


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("path", "expected"), [("/healthz", 0), ("/moved", 0), ("/broken", 1)])
def test_healthcheck_status(
    *,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    http_port: int,
    path: str,
    expected: int,
) -> None:
    # A proxy in the container's environment must not capture the loopback request.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    cfg_path = write_config(tmp_path, port=1, healthcheck_path=path, healthcheck_timeout=2)
    # PORT from the environment wins over the configured (wrong) port.
    env = {"PORT": str(http_port)}
    assert launcher.main(["--config", str(cfg_path), "--healthcheck"], environ=env) == expected
    out, err = capsys.readouterr()
    report = out if expected == 0 else err
    assert report.count("\n") == 1
    assert f"GET http://127.0.0.1:{http_port}{path}" in report


@pytest.mark.parametrize(
    ("path", "below", "expected"),
    [("/missing", 500, 0), ("/broken", 500, 1), ("/missing", 400, 1), ("/healthz", 500, 0)],
)
def test_healthcheck_any_answer_below_500_rule(
    http_port: int, path: str, below: int, expected: int
) -> None:
    # Without a health route, a 404 (an API without `/`) or a 400 (Django's unknown Host)
    # is an answer from a live server; a 5xx is not.
    cfg = config(port=http_port, healthcheck_path=path, healthcheck_healthy_below=below)
    code, report = launcher.healthcheck(cfg, {})
    assert code == expected, report


@pytest.mark.parametrize("value", [404, "500", True, 500.0])
def test_healthy_below_must_be_400_or_500(value: object) -> None:
    with pytest.raises(launcher.LaunchError, match="healthcheck_healthy_below"):
        config(healthcheck_healthy_below=value)


def test_healthcheck_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    cfg_path = write_config(tmp_path, port=port, healthcheck_timeout=2)
    assert launcher.main(["--config", str(cfg_path), "--healthcheck"], environ={}) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_healthcheck_with_invalid_port_is_unhealthy_not_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Docker reserves exit code 2 for healthchecks; anything wrong is plain "unhealthy".
    cfg_path = write_config(tmp_path)
    assert launcher.main(["--config", str(cfg_path), "--healthcheck"], environ={"PORT": "x"}) == 1
    assert "PORT" in capsys.readouterr().err


def test_healthcheck_tcp_only_when_path_is_null(tmp_path: Path, http_port: int) -> None:
    cfg = config(port=http_port, healthcheck_path=None)
    assert launcher.healthcheck(cfg, {})[0] == 0
    assert launcher.healthcheck(config(port=free_port(), healthcheck_path=None), {})[0] == 1


# --------------------------------------------------------------------------- supervisor and exec


def trap_child(ready: Path, on_term: str) -> list[str]:
    """A child that signals readiness through a file, then waits for SIGTERM."""
    code = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: {on_term})\n"
        f"pathlib.Path({str(ready)!r}).write_text(str(__import__('os').getcwd()))\n"
        "time.sleep(30)\n"
        "sys.exit(99)\n"
    )
    return [sys.executable, "-c", code]


def term_self_when_ready(ready: Path) -> threading.Thread:
    main = threading.main_thread().ident
    assert main is not None

    def run() -> None:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if ready.exists():  # the child runs, so the supervisor's handlers are installed
            # As from `docker stop`, but aimed at the main thread, which waits in waitpid():
            # a process-wide signal may land on this thread instead, and then the main
            # thread's waitpid() is never interrupted and Python's handler never runs
            # (the launcher in an image has no other thread).
            signal.pthread_kill(main, signal.SIGTERM)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("on_term", "expected"),
    [("sys.exit(0)", 0), ("sys.exit(3)", 3), ("signal.raise_signal(signal.SIGKILL)", 128 + 9)],
)
def test_supervisor_forwards_sigterm_and_returns_the_exit_code(
    tmp_path: Path, on_term: str, expected: int
) -> None:
    ready = tmp_path / "ready"
    before = signal.getsignal(signal.SIGTERM)
    thread = term_self_when_ready(ready)
    started = time.monotonic()
    assert launcher.supervise(trap_child(ready, on_term), cwd=str(tmp_path)) == expected
    thread.join()
    assert time.monotonic() - started < 15  # the child ended on SIGTERM, not its sleep
    assert ready.read_text(encoding="utf-8") == str(tmp_path)
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored


def fake_server(venv: Path, name: str, record: Path) -> None:
    """A stand-in server executable that records its PID, argv and cwd, then exits 0."""
    bindir = venv / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    exe = bindir / name
    exe.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps("
        "{'pid': os.getpid(), 'argv': sys.argv, 'cwd': os.getcwd()}))\n",
        encoding="utf-8",
    )
    exe.chmod(0o755)


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_run_execs_the_server_in_place(tmp_path: Path, server: str) -> None:
    venv, app_dir, record = tmp_path / "venv", tmp_path / "app", tmp_path / "record.json"
    app_dir.mkdir()
    fake_server(venv, server, record)
    interface = "wsgi" if server == "gunicorn" else "asgi"
    cfg_path = write_config(
        tmp_path, server=server, interface=interface, venv=str(venv), app_dir=str(app_dir)
    )
    env = {**os.environ, "WEB_CONCURRENCY": "2", "PORT": str(free_port())}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--config", str(cfg_path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    seen = json.loads(record.read_text(encoding="utf-8"))
    assert seen["pid"] == proc.pid  # exec'd, not spawned: the server owns the launcher's PID
    printed = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(cfg_path), "--print-command"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert seen["argv"] == json.loads(printed.stdout)["argv"]
    assert seen["cwd"] == str(app_dir)
    threads = ", 4 threads" if server == "gunicorn" else ""
    assert err.splitlines() == [
        f"pydeploy-launcher: {server}, 2 workers (WEB_CONCURRENCY=2){threads}, port {env['PORT']}"
    ]


def test_pid1_uvicorn_is_supervised_not_execd(tmp_path: Path) -> None:
    venv, ready = tmp_path / "venv", tmp_path / "ready"
    bindir = venv / "bin"
    bindir.mkdir(parents=True)
    exe = bindir / "uvicorn"
    body = trap_child(ready, "sys.exit(0)")[2]
    exe.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
    exe.chmod(0o755)
    cfg_path = write_config(
        tmp_path, app="a:app", server="uvicorn", interface="asgi", venv=str(venv),
        app_dir=str(tmp_path),
    )  # fmt: skip
    thread = term_self_when_ready(ready)
    # pid1=True: the decision a real PID 1 makes; returning at all proves no exec happened.
    assert launcher.main(["--config", str(cfg_path)], environ={}, pid1=True) == 0
    thread.join()


def test_missing_server_executable_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = write_config(tmp_path, venv=str(tmp_path / "empty-venv"), workers=1)
    assert launcher.main(["--config", str(cfg_path)], environ={}) == 127
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"pydeploy-launcher: {tmp_path}/empty-venv/bin/gunicorn not found or not executable: "
        "the image's virtualenv lacks gunicorn, which the 'gunicorn' server needs"
    )


def test_exit_code_of_wait_statuses() -> None:
    assert launcher.exit_code_of(3 << 8) == 3
    assert launcher.exit_code_of(signal.SIGTERM) == 128 + signal.SIGTERM


# --------------------------------------------------------------------------- portability


def test_stdlib_only_and_python38_syntax() -> None:
    source = SCRIPT.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports would tie the launcher to pydeploy"
            imported.add((node.module or "").split(".")[0])
    assert imported <= sys.stdlib_module_names


def _python38() -> str | None:
    for candidate in ("python3.8", str(Path.home() / ".pyenv/versions/3.8.18/bin/python")):
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return candidate
    return None


def test_runs_under_python38(tmp_path: Path) -> None:
    python38 = _python38()
    if python38 is None:
        pytest.skip("no Python 3.8 interpreter on this machine")
    cfg_path = write_config(tmp_path, workers=2)
    result = subprocess.run(
        [python38, str(SCRIPT), "--config", str(cfg_path), "--print-command"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["workers"] == 2


def test_access_log_can_be_turned_off() -> None:
    on = launcher.gunicorn_argv(config(), workers=2, port=8000, gunicorn_version=(27, 0))
    assert on[on.index("--access-logfile") + 1] == "-"
    off = launcher.gunicorn_argv(
        config(access_log=False), workers=2, port=8000, gunicorn_version=(27, 0)
    )
    assert "--access-logfile" not in off
    assert off[off.index("--error-logfile") + 1] == "-", "errors still go to stderr"
    quiet = launcher.uvicorn_argv(
        config(server="uvicorn", interface="asgi", access_log=False),
        workers=2, port=8000, uvicorn_version=(0, 54),
    )  # fmt: skip
    assert "--no-access-log" in quiet
    assert "--no-access-log" not in launcher.uvicorn_argv(
        config(server="uvicorn", interface="asgi"), workers=2, port=8000, uvicorn_version=(0, 54)
    )


@pytest.mark.parametrize(
    ("value", "mode"),
    [(True, "buffered"), (False, "off"), ("buffered", "buffered"), ("unbuffered", "unbuffered"),
     ("off", "off")],
)  # fmt: skip
def test_access_log_modes_and_the_older_booleans(value: object, mode: str) -> None:
    assert config(access_log=value).access_log == mode


def test_unknown_access_log_mode_is_refused() -> None:
    with pytest.raises(launcher.LaunchError, match="'access_log' must be one of buffered"):
        config(access_log="fast")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"wsgi_worker": "sync"}, {"server": "gunicorn-uvicorn", "interface": "asgi"}],
)
def test_gunicorn_buffers_the_access_log_on_every_worker(overrides: dict[str, str]) -> None:
    argv = launcher.gunicorn_argv(config(**overrides), workers=2, port=8000, gunicorn_version=None)
    assert argv[argv.index("--logger-class") + 1] == "pydeploy_accesslog.GunicornLogger"
    assert argv[argv.index("--pythonpath") + 1] == "/opt/pydeploy/lib"
    assert argv[argv.index("--access-logfile") + 1] == "-"


def test_unbuffered_access_log_is_the_servers_own() -> None:
    gunicorn = launcher.gunicorn_argv(
        config(access_log="unbuffered", wsgi_worker="sync"),
        workers=2, port=8000, gunicorn_version=None,
    )  # fmt: skip
    assert "--logger-class" not in gunicorn
    assert "--pythonpath" not in gunicorn, "the sync worker needs nothing from worker_lib"
    assert gunicorn[gunicorn.index("--access-logfile") + 1] == "-"
    cfg = config(server="uvicorn", interface="asgi", access_log="unbuffered")
    uvicorn = launcher.uvicorn_argv(cfg, workers=2, port=8000, uvicorn_version=None)
    assert "--log-config" not in uvicorn
    assert "--no-access-log" not in uvicorn
    assert launcher.uvicorn_environ(cfg, {"PYTHONPATH": "/x"}) is None


@pytest.mark.parametrize(
    "extra", [["--log-config", "log.ini"], ["--logger-class=myapp.Logger"],
              ["--access-logfile", "/tmp/a.log"], ["--statsd-host", "st:8125"]],
)  # fmt: skip
def test_user_logging_options_keep_gunicorns_own_log(extra: list[str]) -> None:
    argv = launcher.gunicorn_argv(
        config(extra_args=extra), workers=2, port=8000, gunicorn_version=None
    )
    assert "pydeploy_accesslog.GunicornLogger" not in argv
    assert argv[-1 - len(extra) : -1] == extra


def test_user_log_config_keeps_uvicorns_own_log() -> None:
    cfg = config(server="uvicorn", interface="asgi", extra_args=["--log-config=log.json"])
    argv = launcher.uvicorn_argv(cfg, workers=2, port=8000, uvicorn_version=None)
    assert [a for a in argv if a.startswith("--log-config")] == ["--log-config=log.json"]
    assert launcher.uvicorn_environ(cfg, {}) is None


def test_buffered_uvicorn_finds_the_handler_on_pythonpath(tmp_path: Path) -> None:
    cfg = config(server="uvicorn", interface="asgi")
    env = launcher.uvicorn_environ(cfg, {"PYTHONPATH": "/opt/extra", "HOME": "/h"})
    assert env == {"PYTHONPATH": "/opt/pydeploy/lib:/opt/extra", "HOME": "/h"}
    assert launcher.uvicorn_environ(cfg, {}) == {"PYTHONPATH": "/opt/pydeploy/lib"}
    system = System(cgroup_root=tmp_path, proc_cgroup=tmp_path / "none", affinity=1)
    plan = launcher.plan_launch(cfg, {"WEB_CONCURRENCY": "1"}, system)
    assert plan.env is not None
    assert plan.env["PYTHONPATH"].split(":")[0] == "/opt/pydeploy/lib"
