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


class TestTinyNativeVAE:
    CATEGORY = "AvatarCascadeTests"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (folder_paths.get_filename_list("vae"),)}}

    def load(self, vae_name):
        from comfy_tiny_native import tiny_native_vae

        return (tiny_native_vae(_load("vae", vae_name)),)


class TestTinyNativeCLIP:
    CATEGORY = "AvatarCascadeTests"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": (folder_paths.get_filename_list("text_encoders"),)}}

    def load(self, clip_name):
        from comfy_tiny_native import tiny_native_clip

        return (tiny_native_clip(_load("text_encoders", clip_name)),)


class TestTinyNativeCLIPVision:
    CATEGORY = "AvatarCascadeTests"
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_name": (folder_paths.get_filename_list("clip_vision"),)}}

    def load(self, clip_name):
        from comfy_tiny_native import tiny_native_clip_vision

        return (tiny_native_clip_vision(_load("clip_vision", clip_name)),)


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeTestTinyNativeVAE": TestTinyNativeVAE,
    "AvatarCascadeTestTinyNativeCLIP": TestTinyNativeCLIP,
    "AvatarCascadeTestTinyNativeCLIPVision": TestTinyNativeCLIPVision,
}
