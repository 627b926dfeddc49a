"""compile_bytecode reusing a previous venv's .pyc for unchanged sources: the tree it
leaves is byte for byte (and mode for mode) the tree a full compile leaves, and only
a source whose bytes and .pyc header match is taken over."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from pydeploy.payload.builder_script import compile_bytecode

_TAG = sys.implementation.cache_tag


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "lib" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    found: dict[str, tuple[int, bytes | None]] = {}
    for directory, _dirs, names in os.walk(root):
        here = Path(directory)
        found[str(here.relative_to(root))] = (here.stat().st_mode, None)
        for name in names:
            path = here / name
            found[str(path.relative_to(root))] = (path.stat().st_mode, path.read_bytes())
    return found


def _pyc(root: Path, rel: str) -> Path:
    return Path(importlib.util.cache_from_source(str(root / "lib" / rel)))


FILES = {
    "pkg/__init__.py": "VALUE = 1\n",
    "pkg/same.py": "def f():\n    return 'same'\n",
    "pkg/changed.py": "X = 'old'\n",
    "broken.py": "def (:\n",  # not Python: skipped, as before
}


def test_reused_bytecode_equals_a_full_compile(tmp_path: Path) -> None:
    # The previous venv was compiled where the new one lives (the same path in the
    # image); here: compiled in place, then moved aside.
    venv = tmp_path / "venv"
    _tree(venv, FILES)
    compile_bytecode(sys.executable, str(venv / "lib"), [])
    previous = tmp_path / "previous"
    venv.rename(previous)
    # A dependency change: one file changed, one added, one removed.
    new_files = {**FILES, "pkg/changed.py": "X = 'new'\n", "pkg/added.py": "Y = 2\n"}
    del new_files["pkg/__init__.py"]
    _tree(venv, new_files)
    # A previous .pyc whose header does not match its source is not taken over.
    stale = _pyc(previous, "pkg/same.py")
    forged = tmp_path / "forged.py"
    forged.write_text("def f():\n    return 'forged'\n", encoding="utf-8")
    compile_bytecode(sys.executable, str(forged), [])
    good = stale.read_bytes()
    forged_pyc = Path(importlib.util.cache_from_source(str(forged))).read_bytes()
    stale.write_bytes(forged_pyc)

    code = compile_bytecode(sys.executable, str(venv / "lib"), [], (str(venv), str(previous)))
    assert code != 0  # broken.py, as a full compile reports it
    assert _pyc(venv, "pkg/same.py").read_bytes() == good  # recompiled, not the forgery
    reused = _snapshot(venv)

    fresh = tmp_path / "fresh"
    shutil.copytree(venv, fresh)
    for pycache in list(fresh.rglob("__pycache__")):
        shutil.rmtree(pycache)
    fresh.rename(tmp_path / "aside")
    venv.rename(tmp_path / "reused")
    (tmp_path / "aside").rename(venv)
    assert compile_bytecode(sys.executable, str(venv / "lib"), []) == code
    assert _snapshot(venv) == reused
    assert (venv / "lib" / "pkg" / "__pycache__" / f"changed.{_TAG}.pyc").is_file()


def test_unchanged_sources_take_the_previous_bytecode(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _tree(venv, {"a.py": "A = 1\n", "b.py": "B = 1\n"})
    compile_bytecode(sys.executable, str(venv / "lib"), [])
    previous = tmp_path / "previous"
    venv.rename(previous)
    _tree(venv, {"a.py": "A = 1\n", "b.py": "B = 2\n"})
    # Marked so that a reuse shows: the same header, another body.
    marked = _pyc(previous, "a.py")
    marked.write_bytes(marked.read_bytes() + b"#")
    compile_bytecode(sys.executable, str(venv / "lib"), [], (str(venv), str(previous)))
    assert _pyc(venv, "a.py").read_bytes() == marked.read_bytes()
    assert _pyc(venv, "b.py").read_bytes() != _pyc(previous, "b.py").read_bytes()
