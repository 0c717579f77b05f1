"""The import-layering contracts in pyproject.toml ([tool.importlinter]): cli -> operations ->
repository -> storage -> pure core -> vocabulary, and operations never import storage or
format. Run with the real ``lint-imports`` on this tree, and on a copy with a violation
planted, so that a contract that cannot fail would show here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# lint-imports, run by this interpreter (its script may not be on PATH)
LINT_IMPORTS = (
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def planted(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package and its pyproject.toml with ``line`` added to ``module``."""
    shutil.copytree(ROOT / "snapstore", tmp_path / "snapstore", ignore=shutil.ignore_patterns("*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "snapstore" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("ops/gc.py", "from snapstore.storage import fsio", "never storage or format"),
        ("ops/stats.py", "from snapstore.format import pack", "never storage or format"),
        ("repo_space.py", "from snapstore.ops import gc", "cli -> operations"),
        ("storage/pins.py", "from snapstore import repo", "cli -> operations"),
        ("format/pack.py", "from snapstore.storage import fsio", "cli -> operations"),
    ],
)
def test_a_planted_violation_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    done = lint_imports(planted(tmp_path, module, line))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 broken" in done.stdout
    assert broken in done.stdout.split("Broken contracts", 1)[1]
