"""Avatar Cascade — ComfyUI custom node pack (entry point read by ComfyUI).

The body is guarded so pytest can import the repository root without a parent
package (ComfyUI's loader sets ``__package__``). The engine package
``avatar_cascade`` sits beside ``nodes/``; when the pack was not pip-installed
(ComfyUI-Manager installs only requirements.txt) its folder is put on sys.path.
"""

if __package__:
    import os
    import sys

    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.append(_here)

    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    # the web extension that shows each node's warnings in the graph (web/avatar_cascade.js)
    WEB_DIRECTORY = "./web"

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
