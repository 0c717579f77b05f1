"""Start-up (issues 17 and 18): a run imports only the command it runs. ``snap log`` reads
trailers and the index, so it imports neither the codec (zstandard), nor the chunker
(fastcdc), nor the commit or checkout pipelines and their thread pools; ``snap --help``
imports no command and no repository at all. Checked with ``python -X importtime`` in a
subprocess (what a user's run imports), not timed."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from snapstore.cli.app import build_app
from snapstore.cli.commands import COMMANDS, command_named
from tests.conftest import run_snap

# Never needed to list snapshots or to print help.
HEAVY = {
    "zstandard",
    "fastcdc",
    "concurrent.futures",
    "rich",
    "snapstore.chunker",
    "snapstore.ops.commit",
    "snapstore.ops.pipeline",
    "snapstore.ops.checkout",
    "snapstore.ops.workers",
    "snapstore.ops.verify",
    "snapstore.ops.prune",
    "snapstore.cli.commit_cmd",
    "snapstore.cli.checkout_cmd",
    "snapstore.cli.progressbar",
}
# Not needed by --help either: the repository and every command's module.
REPOSITORY = {"lmdb", "snapstore.repo", "snapstore.storage", "snapstore.format", "snapstore.ops"}
COMMAND_MODULES = {module for module, _, _ in COMMANDS.values()} - {"snapstore.cli.completion_cmd"}


# The CLI's own entry (snapstore.cli.app.main), then the modules it left imported: sys.modules
# rather than -X importtime, which does not list what importlib.import_module imports.
_PROBE = (
    "import sys\n"
    "from snapstore.cli.app import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def imported_by(*args: str, code: int = 0) -> set[str]:
    """The modules a real ``snap ARGS`` imports (exiting ``code``)."""
    env = {k: v for k, v in os.environ.items() if k != "SNAP_REPO"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == code, done.stderr[-2000:]
    return set(done.stderr.split())


def test_log_imports_only_what_listing_needs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = tmp_path / "vm.img"
    src.write_bytes(os.urandom(300_000))
    assert run_snap("init", str(repo)).returncode == 0
    assert run_snap("commit", str(src), "-r", str(repo), "--tag", "t").returncode == 0
    for args in (["log"], ["log", "--json", "--tag", "t"], ["-r", str(repo), "show", "latest"]):
        imported = imported_by(*args, *(["-r", str(repo)] if args[0] != "-r" else []))
        assert "snapstore.repo" in imported and "snapstore.format.manifest" in imported  # it did list
        assert not imported & HEAVY, (args, sorted(imported & HEAVY))


def test_help_imports_no_command_and_no_repository() -> None:
    for args, code in ((["--help"], 0), ([], 2)):  # no command: the help too, exit 2
        imported = imported_by(*args, code=code)
        assert "snapstore.cli.app" in imported
        unwanted = {m for m in imported if m.split(".")[0] in {"lmdb", "zstandard", "fastcdc", "rich"}}
        unwanted |= {m for m in imported if any(m == r or m.startswith(r + ".") for r in REPOSITORY)}
        unwanted |= imported & (HEAVY | COMMAND_MODULES)
        assert not unwanted, sorted(unwanted)


def test_a_commands_help_imports_that_command_only() -> None:
    imported = imported_by("checkout", "--help")
    assert "snapstore.cli.checkout_cmd" in imported
    assert not imported & {"snapstore.cli.commit_cmd", "snapstore.cli.space_cmd", "snapstore.cli.check_cmd"}


def test_command_table_matches_the_commands() -> None:
    """The one-line help ``snap --help`` shows without importing a command is the command's own."""
    for name, (module, attribute, short_help) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        own = command.info.help if isinstance(command, typer.Typer) else inspect.getdoc(command)
        assert isinstance(own, str)
        assert own.split("\n\n")[0].replace("\n", " ") == short_help, name
    whole = typer.main.get_command(build_app(every=True))
    assert isinstance(whole, typer.core.TyperGroup)
    assert list(whole.commands) == list(COMMANDS)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["log"], "log"),
        (["-r", "log", "show"], "show"),  # -r takes a value, even one named like a command
        (["--repo", "x", "-q", "--lock-wait", "5s", "stats", "--json"], "stats"),
        (["--repo=x", "gc"], "gc"),
        (["--progress", "log", "commit", "f"], "commit"),
        (["-v", "config", "get", "quota"], "config"),
        (["comit"], None),
        (["--help"], None),
        ([], None),
        (["--", "log"], None),
    ],
)
def test_command_named(argv: list[str], expected: str | None) -> None:
    assert command_named(argv) == expected


def test_every_command_still_runs_and_suggests(tmp_path: Path) -> None:
    """Commands not loaded are listed, suggested and rejected as before."""
    done = run_snap("--help")
    assert done.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in done.stdout.decode(), name
    wrong = run_snap("stast")
    assert wrong.returncode == 2 and "Did you mean 'stats'?" in wrong.stderr.decode()
