"""Shell completion (issue 18, point 7): ``snap completion bash|zsh|fish`` prints click's
script; sourced in a real bash, it completes commands, options and file names through
click's protocol ($_SNAP_COMPLETE, COMP_WORDS, COMP_CWORD). typer's --install-completion
and --show-completion are replaced by it, and say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapstore.errors import UsageError
from tests.conftest import have, run_snap


@pytest.fixture
def snap_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH finds ``snap`` (this interpreter's snapstore) first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "snap"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m snapstore "$@"\n')
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("_SNAP")}
    return env | {"PATH": f"{bin_dir}:{env.get('PATH', '')}"}


def bash_complete(env: dict[str, str], script: str, *words: str) -> list[str]:
    """What bash offers after sourcing ``script`` and pressing tab after ``words`` (the last
    one being the word completed)."""
    array = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}\n"
        "complete -p snap >/dev/null || exit 9\n"  # the script registered its function
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
        f'_snap_completion snap "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"\n'
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    done = subprocess.run(["bash", "--norc", "-c", program], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return [line for line in done.stdout.decode().splitlines() if line]


@pytest.mark.skipif(not have("bash"), reason="needs bash")
def test_bash_script_completes_commands_and_options(tmp_path: Path, snap_on_path: dict[str, str]) -> None:
    done = run_snap("completion", "bash")
    assert done.returncode == 0 and b"_SNAP_COMPLETE=bash_complete" in done.stdout
    script = tmp_path / "snap.bash"
    script.write_bytes(done.stdout)
    assert bash_complete(snap_on_path, str(script), "snap", "co") == ["commit", "completion", "config"]
    assert bash_complete(snap_on_path, str(script), "snap", "c") == [
        "commit",
        "checkout",
        "completion",
        "config",
    ]
    assert "--tag" in bash_complete(snap_on_path, str(script), "snap", "log", "--t")
    assert bash_complete(snap_on_path, str(script), "snap", "config", "s") == ["set"]
    assert bash_complete(snap_on_path, str(script), "snap", "-r", "/tmp", "st") == ["stats"]


def test_a_path_completes_as_a_file_name(snap_on_path: dict[str, str]) -> None:
    """Through the protocol itself: a path argument asks the shell for file names."""
    for words, cword, expected in (("snap commit vm", 2, "file,vm"), ("snap log -r ", 3, "file,")):
        env = snap_on_path | {
            "_SNAP_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
        done = subprocess.run(["snap"], env=env, capture_output=True, timeout=120)
        assert done.returncode == 0 and done.stdout.decode().splitlines() == [expected], done


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts(shell: str, tmp_path: Path, snap_on_path: dict[str, str]) -> None:
    done = run_snap("completion", shell)
    assert done.returncode == 0 and f"_SNAP_COMPLETE={shell}_complete".encode() in done.stdout
    # zsh gives the index of the word completed, fish the word itself
    cword = "1" if shell == "zsh" else "co"
    env = snap_on_path | {"_SNAP_COMPLETE": f"{shell}_complete", "COMP_WORDS": "snap co", "COMP_CWORD": cword}
    answered = subprocess.run(["snap"], env=env, capture_output=True, timeout=120).stdout.decode()
    assert "commit" in answered and "config" in answered and "checkout" not in answered
    if have(shell):  # the script parses in the shell itself
        script = tmp_path / f"snap.{shell}"
        script.write_bytes(done.stdout)
        check = [shutil.which(shell) or shell, "-n", str(script)]
        assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0


@pytest.mark.parametrize("option", ["--install-completion", "--show-completion"])
def test_typers_completion_options_point_to_snap_completion(option: str) -> None:
    done = run_snap(option)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == UsageError.exit_code and len(lines) == 1
    assert "snap completion bash" in lines[0]


def test_unknown_shell_is_a_usage_error() -> None:
    done = run_snap("completion", "tcsh")
    assert done.returncode == UsageError.exit_code and b"bash, zsh or fish" in done.stderr
    bad = run_snap("log", env={"_SNAP_COMPLETE": "tcsh_complete"})
    assert bad.returncode == UsageError.exit_code and bad.stdout == b""
