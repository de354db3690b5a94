"""``python -m avatar_cascade``."""

import sys

from .cli import main

sys.exit(main())
