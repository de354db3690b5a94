"""Test-only ComfyUI nodes: ComfyUI's own VAE / CLIP / CLIP_VISION objects at the tiny demo sizes.

Linked into ``custom_nodes`` by tests/test_comfyui_integration.py only. The native workflow's VAELoader,
CLIPLoader and CLIPVisionLoader cannot load the tiny demo files (ComfyUI hard-codes the real widths), so the
test swaps those three nodes for these, which build the same ComfyUI classes at the demo sizes
(tests/comfy_tiny_native.py). Never shipped with the pack.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (comfy_tiny_native)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository (avatar_cascade)

import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402


def _load(folder: str, name: str) -> dict:
    return comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise(folder, name), safe_load=True)


def _tiny_loader(folder: str, widget: str, return_type: str, builder: str) -> type:
    """A loader node for one ComfyUI model folder that builds its object with ``comfy_tiny_native.<builder>``."""

    def load(self, **inputs):
        import comfy_tiny_native

        return (getattr(comfy_tiny_native, builder)(_load(folder, inputs[widget])),)

    def input_types(cls):
        return {"required": {widget: (folder_paths.get_filename_list(folder),)}}

    attrs = {"CATEGORY": "AvatarCascadeTests", "RETURN_TYPES": (return_type,), "FUNCTION": "load", "load": load}
    return type(f"TestTiny{builder}", (), {**attrs, "INPUT_TYPES": classmethod(input_types)})


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeTestTinyNativeVAE": _tiny_loader("vae", "vae_name", "VAE", "tiny_native_vae"),
    "AvatarCascadeTestTinyNativeCLIP": _tiny_loader("text_encoders", "clip_name", "CLIP", "tiny_native_clip"),
    "AvatarCascadeTestTinyNativeCLIPVision": _tiny_loader(
        "clip_vision", "clip_name", "CLIP_VISION", "tiny_native_clip_vision"
    ),
}
