"""The benchmark's registry rows (tests/benchmarks): bytes uploaded as the growth of a
registry's blob storage, the private registry's config, and the rows' report. The
benchmark itself is run by hand; these are its pure helpers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_build
import benchlib


def test_stored_bytes_count_blob_files_only(tmp_path: Path) -> None:
    blobs = tmp_path / "docker" / "registry" / "v2" / "blobs" / "sha256" / "ab" / "abcd"
    blobs.mkdir(parents=True)
    (blobs / "data").write_bytes(b"x" * 1000)
    repos = tmp_path / "docker" / "registry" / "v2" / "repositories" / "team" / "_layers"
    repos.mkdir(parents=True)
    (repos / "link").write_bytes(b"sha256:abcd")  # links are not uploads
    assert benchlib.stored_blob_bytes(tmp_path) == 1000
    assert benchlib.stored_blob_bytes(tmp_path / "absent") == 0


def test_registry_config_serves_plain_http_from_its_root(tmp_path: Path) -> None:
    config = benchlib.registry_config(tmp_path / "data", "127.0.0.1:5999")
    assert f"rootdirectory: {tmp_path / 'data'}\n" in config
    assert "addr: 127.0.0.1:5999\n" in config
    assert "tls" not in config


def test_push_rows_report_medians_ratio_and_uploads() -> None:
    samples = []
    for seconds, uploaded in ((2.0, 6_000), (4.0, 8_000), (3.0, 7_000)):
        sample = bench_build.Sample()
        sample.pushes = {
            "code-only push": {"pydeploy": (seconds, uploaded), "uv": (10.0, 6_400_000)},
            "dependency push": {"pydeploy": (6.0, 1_680_000), "uv": (10.0, 6_410_000)},
        }
        samples.append(sample)
    lines = bench_build.push_table(samples)
    (code,) = [line for line in lines if line.startswith("code-only rebuild + push")]
    assert "3.00 s" in code
    assert "0.30x (<= 0.5x) PASS" in code
    assert code.endswith("7.0 KB / 6.40 MB")
    (dep,) = [line for line in lines if line.startswith("dependency added + push")]
    assert "0.60x (<= 0.5x) MISS" in dep
    assert dep.endswith("1.68 MB / 6.41 MB")
