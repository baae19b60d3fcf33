"""``python -m sevenomni``: the ``sevenomni`` command."""

import sys

from sevenomni.cli import main

sys.exit(main())
