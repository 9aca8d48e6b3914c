"""``python -m bot`` is the ``debug-access`` command."""

import sys

from bot.cli import main

sys.exit(main())
