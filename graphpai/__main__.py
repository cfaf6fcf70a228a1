"""``python -m graphpai``: the graphpai command line."""

import sys

from .cli import main

sys.exit(main())
