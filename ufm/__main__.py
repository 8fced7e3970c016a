"""``python -m ufm`` runs the command line (`ufm.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
