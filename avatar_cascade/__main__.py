"""``python -m avatar_cascade``."""

import sys

from avatar_cascade.cli import main

sys.exit(main())
