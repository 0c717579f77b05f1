"""The README works as written (issue 18, points 5 and 11): its Python API example runs, and
its install steps give the venv step Debian's own python3 needs and the way round snapd's
``snap``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_python_api_example_runs(tmp_path: Path) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", _section("Python API"), re.S)
    with open(tmp_path / "vm.img", "wb") as f:
        f.truncate(8 << 20)
        f.write(os.urandom(1 << 20))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "restored.img").read_bytes() == (tmp_path / "vm.img").read_bytes()


def test_install_steps_use_a_venv_and_name_the_snapd_clash() -> None:
    start = _section("Quick start")
    assert "python3 -m venv" in start and "externally-managed-environment" in start
    assert "python -m snapstore" in start and "snapd" in start
    install = start.index("python3 -m venv")
    assert install < start.index("pip install -e ."), "the venv comes before pip"


def test_python_m_snapstore_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "snapstore", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "Usage: snap" in done.stdout
