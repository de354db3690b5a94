"""``python -m avatar_cascade``."""

import os
import sys

from avatar_cascade.cli import main

rc = main()
if rc == 130:
    # Interrupted: finished work is on disk (every write is atomic). Skip the interpreter's teardown, where a
    # further Ctrl-C would find the default handler back and kill the process with a signal status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
sys.exit(rc)
