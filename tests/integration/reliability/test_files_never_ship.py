"""Reliability contract, issue 10: secrets and files that must never ship.

Built on the real engine: the runtime image has no setuid/setgid file (unless
`keep-setuid = true`), credential-shaped files stay out of /app, a file that looks like a
secret is named in a warning, a `user-id` that aliases a base account is refused with exit
2 before anything is installed, and the Dockerfile that `pydeploy dockerfile` prints is
safe on its own, without the .dockerignore only `--write` creates (built with BuildKit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import Resources, RunPydeploy

ROOT = Path(__file__).resolve().parents[3]
FLASK = ROOT / "examples" / "flask-app"
BUILDKIT_CLI = Path("/usr/bin/docker")  # Debian's 20.10 CLI: BuildKit built in
# Inspected as root, so that no directory is unreadable to find.
PROBE = (
    "find / -xdev -perm /6000 | sort; echo '--- /app'; "
    "if [ -d /app ]; then cd /app && find . | sort; fi"
)
CREDENTIALS = {
    ".aws/credentials": "[default]\naws_secret_access_key = x\n",
    ".ssh/id_ed25519": "not a real key\n",
    ".docker/config.json": '{"auths": {}}\n',
    ".kube/config": "apiVersion: v1\n",
    ".npmrc": "//registry.npmjs.org/:_authToken=x\n",
    ".envrc": "export TOKEN=x\n",
    ".htpasswd": "admin:$apr1$x\n",
    "credentials.json": "{}\n",
    "terraform.tfstate": "{}\n",
    ".bash_history": "export TOKEN=x\n",
    "client.p12": "p12\n",
    ".env": "SECRET=x\n",
    ".git/config": "[core]\n",
}
# Looks like a key by content, under an innocent name: warned about, by path.
KEY_FILE = (
    "config/signing.txt",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n",
)


def project(tmp_path: Path, table: str = "") -> Path:
    root = Path(shutil.copytree(FLASK, tmp_path / "flask-app"))
    for rel, text in {**CREDENTIALS, KEY_FILE[0]: KEY_FILE[1]}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if table:
        pyproject = root / "pyproject.toml"
        pyproject.write_text(
            pyproject.read_text().replace("[tool.pydeploy]\n", f"[tool.pydeploy]\n{table}", 1)
        )
    return root


def probe(resources: Resources, image: str) -> tuple[list[str], set[str]]:
    """(setuid/setgid paths, files and directories under /app) of the image."""
    result = resources.run(image, entrypoint=["/bin/sh", "-c", PROBE], user="0", timeout=120)
    assert result.exit_code == 0, result.output
    privileged, app = result.output.split("--- /app\n")
    return privileged.split(), {line.removeprefix("./") for line in app.split()} - {"."}


def build(
    run_pydeploy: RunPydeploy, resources: Resources, root: Path, base: str
) -> tuple[str, str]:
    tag = resources.image(f"pydeploy-test/never-ship:{uuid.uuid4().hex[:12]}")
    proc = run_pydeploy("build", str(root), "--base", base, "--network", "host", "--tag", tag,
                        cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tag, proc.stderr


def test_the_image_has_no_setuid_files_and_no_credentials(
    run_pydeploy: RunPydeploy, resources: Resources, base_image: str, tmp_path: Path
) -> None:
    base = probe(resources, base_image)[0]
    assert "/usr/bin/su" in base, "the test base has setuid programs to drop"
    tag, stderr = build(run_pydeploy, resources, project(tmp_path), base_image)
    privileged, app = probe(resources, tag)
    assert privileged == []
    assert app & set(CREDENTIALS) == set()
    assert KEY_FILE[0] in app
    assert f"pydeploy: warning: {KEY_FILE[0]} looks like it holds a secret (Private Key" in stderr


def test_keep_setuid_keeps_the_bases_bits(
    run_pydeploy: RunPydeploy, resources: Resources, base_image: str, tmp_path: Path
) -> None:
    tag, _ = build(run_pydeploy, resources, project(tmp_path, "keep-setuid = true\n"), base_image)
    assert probe(resources, tag)[0] == probe(resources, base_image)[0]


def test_a_user_id_that_aliases_a_base_group_is_refused(
    run_pydeploy: RunPydeploy, resources: Resources, base_image: str, tmp_path: Path
) -> None:
    root = project(tmp_path, "user-id = 42\n")
    tag = resources.image(f"pydeploy-test/never-built:{uuid.uuid4().hex[:12]}")  # if it were
    proc = run_pydeploy("build", str(root), "--base", base_image, "--network", "host",
                        "--tag", tag, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    refused = "pydeploy: config error: tool.pydeploy.user-id = 42 is already the base image's"
    assert f"{refused} user `_apt` (uid 42 in /etc/passwd) and group `shadow`" in proc.stderr
    assert "dependencies:" not in proc.stderr, "refused before any install"


def test_the_printed_dockerfile_ships_no_secrets_on_its_own(
    run_pydeploy: RunPydeploy,
    resources: Resources,
    base_image: str,
    ca_bundle: Path,
    tmp_path: Path,
) -> None:
    if not BUILDKIT_CLI.is_file():
        pytest.skip(f"{BUILDKIT_CLI} (Debian's docker.io CLI, with BuildKit) is not installed")
    root = project(tmp_path)
    # The launcher files come from an earlier --write; the user's own .dockerignore
    # (which --write would refuse to replace) says nothing about secrets.
    written = run_pydeploy("dockerfile", str(root), "--write", "--base", base_image, cwd=ROOT)
    assert written.returncode == 0, written.stderr
    (root / ".dockerignore").write_text("*.log\n")
    printed = run_pydeploy("dockerfile", str(root), "--base", base_image, cwd=ROOT)
    assert printed.returncode == 0, printed.stderr
    (root / "Dockerfile").write_text(printed.stdout)
    tag = resources.image(f"pydeploy-test/printed:{uuid.uuid4().hex[:12]}")
    proc = subprocess.run(
        [str(BUILDKIT_CLI), "build", "--network", "host",
         "--secret", f"id=ca-bundle,src={ca_bundle}", "-t", tag, str(root)],
        capture_output=True, text=True, timeout=1200, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    privileged, app = probe(resources, tag)
    assert privileged == []
    assert app & set(CREDENTIALS) == set()
    assert {"app.py", "pyproject.toml", KEY_FILE[0]} <= app
