"""``python -m snapstore`` runs the ``snap`` command."""

from snapstore.cli.entry import run

run()
