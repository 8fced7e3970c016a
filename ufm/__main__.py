"""``python -m ufm`` runs the command line (`ufm.cli.run`)."""

from .cli import run

run()
