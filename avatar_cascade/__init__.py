"""Avatar Cascade engine: the Kling-Avatar cascade on open models.

Importing this package is cheap; heavy libraries load inside the functions
that need them. This package never imports ComfyUI.
"""

__version__ = "0.1.0"
