"""The commands of ``snap``: where each is defined and its one-line help, so that a run
imports only the command it runs (``snap log`` does not import the commit pipeline, and
``snap --help`` imports no command at all). tests/test_startup.py checks each line here
against the command's own docstring."""

from __future__ import annotations

# name -> (module, attribute: a function, or a typer app of subcommands, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("snapstore.cli.init_cmd", "init", "Create an empty repository."),
    "commit": (
        "snapstore.cli.commit_cmd",
        "commit",
        "Store FILE (or stdin, or a command's output) as a new snapshot; print its id.",
    ),
    "checkout": (
        "snapstore.cli.checkout_cmd",
        "checkout",
        "Rebuild a snapshot's file (or directory tree), verifying every byte.",
    ),
    "diff": (
        "snapstore.cli.diff_cmd",
        "diff",
        "Print what changed from OLD to NEW: a file's byte ranges, a tree's paths (no file data read).",
    ),
    "log": (
        "snapstore.cli.snapshots_cmd",
        "log",
        "List snapshots, oldest first, with the space each alone holds.",
    ),
    "show": ("snapstore.cli.snapshots_cmd", "show", "Show one snapshot in detail."),
    "ls": ("snapstore.cli.ls_cmd", "ls", "List the entries of a directory snapshot (under PATH)."),
    "rm": (
        "snapstore.cli.snapshots_cmd",
        "rm",
        "Remove snapshots, damaged ones too (by id); 'snap gc' then frees their space.",
    ),
    "gc": (
        "snapstore.cli.space_cmd",
        "gc",
        "Free the space of chunks no snapshot references (no scratch space needed; one pack with --repack).",
    ),
    "prune": (
        "snapstore.cli.space_cmd",
        "prune",
        "Drop snapshots by keep rules and/or to fit a quota, and free their space.",
    ),
    "pin": ("snapstore.cli.pin_cmd", "pin", "Protect a snapshot from every prune."),
    "unpin": ("snapstore.cli.pin_cmd", "unpin", "Let prune consider a snapshot again."),
    "stats": ("snapstore.cli.stats_cmd", "stats", "Repository totals and what each snapshot alone holds."),
    "verify": ("snapstore.cli.check_cmd", "verify", "Check the repository; exit 5 if anything is wrong."),
    "repair": (
        "snapstore.cli.check_cmd",
        "repair",
        "Rebuild the index from the packs; name snapshots that lost data.",
    ),
    "nbd": (
        "snapstore.cli.nbd_cmd",
        "nbd",
        "Serve a file snapshot as a read-only NBD export (qemu, nbdcopy, nbdinfo) until stopped.",
    ),
    "mount": (
        "snapstore.cli.mount_cmd",
        "mount",
        "Mount the snapshots read-only (FUSE): ids/ID, names/NAME/ID and latest/NAME.",
    ),
    "completion": (
        "snapstore.cli.completion_cmd",
        "completion",
        "Print the shell completion script for SHELL (see docs/CLI.md to install it).",
    ),
    "serve": (
        "snapstore.cli.serve_cmd",
        "serve",
        "Serve repositories of this machine to a remote snap (run by ssh: snap -r ssh://...).",
    ),
    "config": ("snapstore.cli.config_cmd", "config_app", "Read or change repository settings (quota)."),
}
# Global options that take a value (to find the command's name after them).
VALUED_OPTIONS = frozenset({"-r", "--repo", "--lock-wait", "--progress", "--remote-snap", "--remote-timeout"})


def command_named(argv: list[str]) -> str | None:
    """The command ``argv`` runs (None: none, or not a command of snap)."""
    args = iter(argv)
    for arg in args:
        if arg in VALUED_OPTIONS:
            next(args, None)
        elif arg == "--":
            return None
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None
