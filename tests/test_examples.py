"""Every examples/*.sh runs to the end (exit 0) with bash, and every examples/*.py with the
interpreter running the tests, as a user would run them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.sh"))
PY_EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SNAP_REPO", "SNAP")}
    # The interpreter running the tests (and its 'snap' entry point) comes first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(tmp_path)
    return env


def test_there_are_examples() -> None:
    assert any(p.name == "daily-snapshot.sh" for p in EXAMPLES)
    assert any(p.name == "nightly.py" for p in PY_EXAMPLES)


@pytest.mark.parametrize("script", PY_EXAMPLES, ids=lambda p: p.name)
def test_python_example_runs(script: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "the example left files behind"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(script)], env=_env(tmp_path), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [], "the example left files behind"


def test_daily_snapshot_with_a_given_image(tmp_path: Path) -> None:
    image = tmp_path / "mine.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
        f.write(os.urandom(1 << 20))
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    script = next(p for p in EXAMPLES if p.name == "daily-snapshot.sh")
    env = _env(tmp_path)
    env["SNAP"] = f"{sys.executable} -m snapstore"
    done = subprocess.run(
        ["bash", str(script), str(image)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "day 1 restored byte for byte" in done.stdout
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before, "the given image was modified"


def test_tree_backup_of_a_given_directory(tmp_path: Path) -> None:
    """examples/tree-backup.sh on a directory of the user's: only read, and its mirror and a
    restored path come out identical (contents, modes, link counts, times, symlinks)."""
    given = tmp_path / "given" / "projects"
    (given / "src").mkdir(parents=True)
    (given / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    os.link(given / "src" / "main.c", given / "src" / "main-link.c")
    (given / "README").symlink_to("src/main.c")
    (given / "data.bin").write_bytes(os.urandom(200_000))
    (given / "data.bin").chmod(0o600)

    def state() -> list[tuple[str, int, int, int]]:
        return [
            (str(p.relative_to(given)), p.lstat().st_mode, p.lstat().st_mtime_ns, p.lstat().st_ctime_ns)
            for p in sorted(given.rglob("*"))
        ]

    before = state()
    script = next(p for p in EXAMPLES if p.name == "tree-backup.sh")
    env = _env(tmp_path)
    env["SNAP"] = f"{sys.executable} -m snapstore"
    done = subprocess.run(
        ["bash", str(script), str(given)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "data.bin restored identical" in done.stdout  # the first entry, links aside, in name order
    assert f"mirror identical to {given}" in done.stdout
    assert state() == before, "the given directory was modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["given"], "the example left files behind"
