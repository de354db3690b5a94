"""Avatar Cascade — ComfyUI custom node pack (entry point read by ComfyUI).

The body is guarded so pytest can import the repository root without a parent
package (ComfyUI's loader sets ``__package__``).
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
