"""``python -m snapstore`` runs the ``snap`` command."""

from snapstore.cli.app import run

run()
