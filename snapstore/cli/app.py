"""The ``snap`` command: registers the commands and maps errors to exit codes (docs/CLI.md)."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
from contextlib import suppress

import click
import typer

from snapstore.cli.check_cmd import repair, verify
from snapstore.cli.checkout_cmd import checkout
from snapstore.cli.commit_cmd import commit
from snapstore.cli.config_cmd import config_app
from snapstore.cli.init_cmd import init
from snapstore.cli.pin_cmd import pin, unpin
from snapstore.cli.signals import Signalled, install
from snapstore.cli.snapshots_cmd import log, rm, show
from snapstore.cli.space_cmd import gc, prune
from snapstore.cli.stats_cmd import stats
from snapstore.errors import SnapstoreError, UsageError, translate_os_error

EXIT_INTERRUPTED = 130
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt (glibc malloc.h)

app = typer.Typer(
    name="snap",
    help="Keep the history of large binary files (VM disk images) in a deduplicating store.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for command in (init, commit, checkout, log, show, rm, gc, prune, pin, unpin, stats, verify, repair):
    app.command()(command)
app.add_typer(config_app, name="config")


class _WarningLine(logging.Handler):
    """Warnings of the library (e.g. recovery met a damaged manifest) as one stderr line each."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"snap: warning: {record.getMessage()}", file=sys.stderr)


_log = logging.getLogger("snapstore")
_log.addHandler(_WarningLine(logging.WARNING))
_log.propagate = False


def error_line(exc: SnapstoreError) -> str:
    return f"snap: error: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the command; errors become one line on stderr and an exit code."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="snap")
        return result if isinstance(result, int) else 0
    except SnapstoreError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        return UsageError.exit_code
    except click.ClickException as exc:
        print(f"snap: error: {exc.format_message()}", file=sys.stderr)
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
        print(error_line(error), file=sys.stderr)
        return error.exit_code


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
