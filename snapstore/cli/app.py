"""The ``snap`` command: registers the commands and maps errors to exit codes (docs/CLI.md)."""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import logging
import os
import sys
from contextlib import suppress
from typing import Annotated

import click
import typer

import snapstore.cli.typer_compat  # noqa: F401  (before any command is built)
from snapstore.cli.commands import COMMANDS, command_named
from snapstore.cli.completion_cmd import COMPLETE_VAR, INSTALL_HINT, answer
from snapstore.cli.options import GLOBAL, REPO_HELP
from snapstore.cli.signals import Signalled, install
from snapstore.cli.text import safe
from snapstore.errors import EXIT_CODES, SnapstoreError, UsageError, translate_os_error
from snapstore.units import parse_duration

EXIT_INTERRUPTED = 130
EXIT_KINDS = {code: kind for kind, code in EXIT_CODES.items()}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt (glibc malloc.h)


class _WarningLine(logging.Handler):
    """Warnings of the library (e.g. recovery met a damaged manifest) as one stderr line each
    (with -v, its notes too)."""

    def emit(self, record: logging.LogRecord) -> None:
        kind = "warning" if record.levelno >= logging.WARNING else "note"
        print(f"snap: {kind}: {record.getMessage()}", file=sys.stderr)


_log = logging.getLogger("snapstore")
_log.addHandler(_WarningLine(logging.INFO))
_log.setLevel(logging.WARNING)
_log.propagate = False


def _version(value: bool) -> None:
    if value:
        from snapstore import __version__

        typer.echo(f"snap {__version__}")
        raise typer.Exit(0)


def _no_install(value: bool) -> None:
    """typer's --install-completion and --show-completion: replaced by 'snap completion SHELL'."""
    if value:
        raise UsageError("snap has no --install-completion or --show-completion", hint=INSTALL_HINT)


def global_options(
    repo: Annotated[str | None, typer.Option("--repo", "-r", help=REPO_HELP, click_type=click.Path())] = None,
    remote_snap: Annotated[
        str | None,
        typer.Option(
            "--remote-snap",
            metavar="COMMAND",
            envvar="SNAP_REMOTE_SNAP",
            help="How ssh runs snap on a remote repository's server (default: snap).",
        ),
    ] = None,
    remote_timeout: Annotated[
        str | None,
        typer.Option(
            "--remote-timeout",
            metavar="DURATION",
            envvar="SNAP_REMOTE_TIMEOUT",
            help="A remote repository's link is dead after DURATION (e.g. 30s, 5m) without progress: "
            "exit 13 (default: 120s).",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only results (ids, tables, JSON), warnings and errors."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print the library's notes.")] = False,
    no_lock: Annotated[
        bool, typer.Option("--no-lock", envvar="SNAP_NO_LOCK", help="Readers take no lock (read-only media).")
    ] = False,
    lock_wait: Annotated[
        str | None,
        typer.Option(
            "--lock-wait",
            metavar="DURATION",
            envvar="SNAP_LOCK_WAIT",
            help="Wait up to DURATION (e.g. 30s, 5m) for a lock held by another snap, instead of exit 6.",
        ),
    ] = None,
    progress: Annotated[
        str,
        typer.Option(
            "--progress",
            metavar="auto|bar|log|none",
            envvar="SNAP_PROGRESS",
            help="auto: a bar on a terminal; log: a line on stderr every 30 s ($SNAP_PROGRESS_INTERVAL).",
        ),
    ] = "auto",
    utc: Annotated[bool, typer.Option("--utc", help="Show times in UTC (default: local time).")] = False,
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=_version, help="Print the version.")
    ] = False,
    install_completion: Annotated[
        bool,
        typer.Option(
            "--install-completion", "--show-completion", hidden=True, is_eager=True, callback=_no_install
        ),
    ] = False,
) -> None:
    """Keep the history of large binary files (VM disk images) in a deduplicating store.

    Options before the command apply to it (snap -r REPO log); -r and --no-lock also work after it."""
    GLOBAL.repo = repo
    GLOBAL.remote_snap = remote_snap
    GLOBAL.remote_timeout = remote_timeout
    GLOBAL.quiet = quiet
    GLOBAL.verbose = verbose
    GLOBAL.no_lock = no_lock
    GLOBAL.utc = utc
    if progress not in ("auto", "bar", "log", "none"):
        raise UsageError(f"--progress {progress!r}", hint="give auto, bar, log or none")
    GLOBAL.progress = progress
    GLOBAL.lock_wait = parse_duration(lock_wait).total_seconds() if lock_wait else 0.0
    if verbose:
        _log.setLevel(logging.INFO)


def build_app(running: str | None = None, *, every: bool = False) -> typer.Typer:
    """The ``snap`` app with the command ``running`` (or, with ``every``, each command) as
    itself and the others as their name and one-line help: only the command run is imported
    (snapstore.cli.commands), and ``snap --help`` lists all of them all the same."""
    snap = typer.Typer(
        name="snap",
        help="Keep the history of large binary files (VM disk images) in a deduplicating store.",
        add_completion=False,
        pretty_exceptions_enable=False,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,  # click's plain help: rich's costs --help ~40 ms of start-up
    )
    snap.callback()(global_options)
    for name, (module, attribute, short_help) in COMMANDS.items():
        if every or name == running:
            command = getattr(importlib.import_module(module), attribute)
            if isinstance(command, typer.Typer):
                snap.add_typer(command, name=name)
            else:
                snap.command(name)(command)
        else:
            snap.command(name, help=short_help, add_help_option=False)(_listed_only)
    return snap


def _listed_only() -> None:
    raise AssertionError("a command listed in --help ran without being loaded")


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole app (typer's CliRunner, completion)
        return build_app(every=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def error_line(exc: SnapstoreError) -> str:
    return f"snap: error: {safe(exc.message)}" + (f" ({safe(exc.hint)})" if exc.hint else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the command; errors become one line on stderr and an exit code (and,
    with --json, ``{"error": {"code", "kind", "message", "hint"}}`` on stdout)."""
    args = sys.argv[1:] if argv is None else argv
    code = _run(args)
    if "--json" in args and _LAST_ERROR and not GLOBAL.json_emitted:
        print(json.dumps({"error": _LAST_ERROR[-1]}, indent=2))
    return code


_LAST_ERROR: list[dict[str, object]] = []


def _error(code: int, message: str, hint: str | None = None) -> str:
    """The stderr line of an error, remembered for --json."""
    _LAST_ERROR.append(
        {"code": code, "kind": EXIT_KINDS.get(code, "error"), "message": message, "hint": hint}
    )
    return f"snap: error: {message}" + (f" ({hint})" if hint else "")


def _run(argv: list[str]) -> int:
    _LAST_ERROR.clear()
    GLOBAL.json_emitted = False
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:  # a completion script asks for candidates (snapstore.cli.completion_cmd)
        return answer(instruction)
    try:
        snap = build_app(command_named(argv))
        result = snap(args=argv, standalone_mode=False, prog_name="snap")
        return result if isinstance(result, int) else 0
    except SnapstoreError as exc:
        print(_error(exc.exit_code, exc.message, exc.hint), file=sys.stderr)
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        return UsageError.exit_code
    except click.ClickException as exc:
        print(_error(UsageError.exit_code, _once(exc.format_message())), file=sys.stderr)
        return UsageError.exit_code
    except Signalled as exc:
        print(exc.line, file=sys.stderr)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # typer's rendering of Ctrl-C
            print("snap: interrupted", file=sys.stderr)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("snap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as exc:  # met writing the command's own output (stdout), where no
        # operation translated it: a full disk there is exit 8, anything else one line too
        if exc.errno == errno.EPIPE:
            return 0
        error = translate_os_error(exc, exc.filename or "standard output", output=True)
        print(error_line(error), file=sys.stderr)  # (no JSON error: stdout is what failed)
        return error.exit_code


def _once(message: str) -> str:
    """typer < 0.26 and click >= 8.2 both add "Did you mean 'x'?" to an unknown command's
    error: keep the first."""
    first, sep, rest = message.partition(" Did you mean")
    return first + sep + rest.split(" Did you mean")[0] if sep else message


def run() -> None:
    _keep_freed_memory()
    install()
    code = main()
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exit without tearing the interpreter down: every file snap wrote is synced and closed
    by now, and the teardown (freeing every object of every module) cost 30 ms a command."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``snap log | head``): nothing to tell
        pass
    except OSError as exc:  # stdout could not take what was left (a full disk, an I/O error)
        error = translate_os_error(exc, "standard output", output=True)
        with suppress(OSError):
            print(error_line(error), file=sys.stderr)
        code = code or error.exit_code
    with suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


def _keep_freed_memory() -> None:
    """Ask glibc to serve chunk-sized buffers from its heap and keep them when freed: commit
    and checkout free and reallocate megabyte buffers all the time, and returning each to the
    kernel costs a page fault per 4 KiB when it comes back (measured: a third of checkout's
    system time). Two arenas: with one per thread, each would keep its own freed buffers
    (checkout of an 8 GiB image with 16 threads: 323 MiB peak RSS with one per thread, 159
    MiB with two, the same speed). Memory stays bounded by the pipelines' own limits."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)  # glibc's largest allowed value
        libc.mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: keep its defaults
        pass
