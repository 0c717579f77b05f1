"""Arguments parsed strictly (issue 18, point 10): a quota of 0 is refused wherever a quota is
given, verify's --read-data and --sample together are refused, and an unknown command is
told once."""

from __future__ import annotations

from pathlib import Path

from snapstore.errors import UsageError
from tests.conftest import run_snap


def test_zero_quota_refused_by_prune(repo_path: Path) -> None:
    done = run_snap("prune", "--quota", "0", "--dry-run", "-r", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert b"out of range" in done.stderr


def test_fraction_of_a_byte_refused(repo_path: Path) -> None:
    done = run_snap("config", "set", "quota", "1.5", "-r", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert b"whole number of bytes" in done.stderr


def test_read_data_and_sample_refused_together(repo_path: Path) -> None:
    done = run_snap("verify", "--read-data", "--sample", "5", "-r", str(repo_path))
    assert done.returncode == UsageError.exit_code
    assert done.stderr.count(b"\n") == 1 and b"--sample" in done.stderr


def test_unknown_command_suggested_once() -> None:
    done = run_snap("comit")
    assert done.returncode == UsageError.exit_code
    assert done.stderr.decode().count("Did you mean 'commit'?") == 1


def test_positional_arguments_keep_their_help() -> None:
    """typer 0.25 with click 8.5 dropped every positional argument's help (click's Argument
    took a help of its own): snapstore.cli.typer_compat puts it back."""
    for command, said in (
        ("checkout", "Snapshot id, unique prefix, or 'latest'."),
        ("commit", "The file to snapshot."),
        ("log", "Only snapshots of this name."),
        ("completion", "bash, zsh or fish."),
    ):
        done = run_snap(command, "--help", env={"COLUMNS": "200"})
        assert done.returncode == 0
        assert said in done.stdout.decode(), (command, done.stdout.decode())


def test_a_mistyped_command_is_one_line_with_one_suggestion() -> None:
    done = run_snap("chekout", "latest")
    lines = done.stderr.decode().splitlines()
    assert done.returncode == UsageError.exit_code and len(lines) == 1, lines
    assert lines[0].count("Did you mean") == 1 and "'checkout'" in lines[0]
