"""The single module that imports ComfyUI, with plain-torch fallbacks.

Inside ComfyUI: model files come from ``folder_paths``, models are wrapped in a
``ModelPatcher`` (around a small container module) and placed with
``load_models_gpu`` so ComfyUI's memory management, "unload models" button and
device choice apply; progress goes to ``comfy.utils.ProgressBar`` (which also
makes loops interruptible) with previews. The refiner's model replicas on extra
GPUs are made after ComfyUI freed room there and are counted among its loaded
models while they live (:class:`ComfyReplicaHost`).

Outside ComfyUI (tests, scripting): models are looked up under
``$AVATAR_CASCADE_MODELS`` (default ``./models``), outputs go to
``$AVATAR_CASCADE_OUTPUT`` (default ``./output``), devices come from torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from avatar_cascade.core.runtime import Progress, ReplicaHost, Runtime

log = logging.getLogger(__name__)

try:  # pragma: no cover - only inside ComfyUI
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import folder_paths

    HAS_COMFY = True
except ImportError:
    mm = None
    folder_paths = None
    HAS_COMFY = False

# Our own folders, registered with ComfyUI (the others are ComfyUI core folders).
EXTRA_FOLDERS = ("LLM", "frame_interpolation")  # registered where ComfyUI lacks them
_registered = False


def _register_folders() -> None:
    global _registered
    if _registered or not HAS_COMFY:
        return
    for name in EXTRA_FOLDERS:  # models/<name> is always searched, besides extra_model_paths entries
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
    _registered = True


def _fallback_models_dir() -> Path:
    return Path(os.environ.get("AVATAR_CASCADE_MODELS", "models"))


def model_roots(kind: str) -> list[Path]:
    """Folders that hold models of ``kind`` (a ComfyUI folder name such as ``vae``)."""
    if HAS_COMFY:
        _register_folders()
        try:
            return [Path(p) for p in folder_paths.get_folder_paths(kind)]
        except KeyError:
            return [Path(folder_paths.models_dir) / kind]
    return [_fallback_models_dir() / kind]


def list_models(kind: str, folders: bool = False) -> list[str]:
    """Names offered in a loader's list: files (safetensors) or, with ``folders``, model folders."""
    names: set[str] = set()
    for root in model_roots(kind):
        if not root.is_dir():
            continue
        if folders:
            names.update(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())
        else:
            names.update(_safetensors_below(root))
    return sorted(names)


def _safetensors_below(root: Path) -> list[str]:
    """``*.safetensors`` names below ``root``, symlinked subfolders followed (each real folder once)."""
    found, seen = [], set()
    for here, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link loop or a folder linked twice
            dirs.clear()
            continue
        seen.add(real)
        rel = Path(here).relative_to(root)
        found += [(rel / f).as_posix() for f in files if f.endswith(".safetensors") and not f.startswith(".")]
    return found


def resolve_model(kind: str, name: str, input_name: str) -> Path:
    """Resolve ``name`` inside the ``kind`` model folders only (no absolute paths, no ``..``)."""
    from avatar_cascade.models.files import resolve_model_path

    return resolve_model_path(model_roots(kind), name, input_name=input_name)


def output_dir() -> Path:
    if HAS_COMFY:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get("AVATAR_CASCADE_OUTPUT", "output"))


def output_path(filename_prefix: str, ext: str) -> Path:
    """Next free ``<prefix>_00001.<ext>`` in the output folder (ComfyUI's counter naming)."""
    from avatar_cascade.core.errors import InputError

    base = output_dir().resolve()
    target = (base / filename_prefix).resolve()
    if not target.is_relative_to(base) or not filename_prefix.strip():
        raise InputError(
            "filename_prefix",
            filename_prefix,
            "must stay inside the output folder",
            "use a plain name such as avatar_cascade/video",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.name
    existing = [p.name for p in target.parent.glob(f"{stem}_*.{ext}")]
    counter = 1
    for n in existing:
        tail = n[len(stem) + 1 : -len(ext) - 1]
        if tail.isdigit():
            counter = max(counter, int(tail) + 1)
    return target.parent / f"{stem}_{counter:05d}.{ext}"


def work_dir(subfolder: str) -> Path:
    """A persistent work folder under the output folder (clip cache lives here)."""
    from avatar_cascade.core.errors import InputError

    base = (output_dir() / "avatar_cascade_work").resolve()
    target = (base / subfolder).resolve()
    if not target.is_relative_to(base):
        raise InputError("cache_folder", subfolder, "must stay inside the work folder", "use a plain name like 'clips'")
    target.mkdir(parents=True, exist_ok=True)
    return target


# -- model management ---------------------------------------------------


class ModelContainer(torch.nn.Module):
    """Holds one model for ComfyUI's ModelPatcher, with a plain ``device`` attribute
    (transformers models expose ``device`` as a read-only property)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = module
        self.device = next(module.parameters()).device


def patcher_for(module: torch.nn.Module):
    """The ComfyUI ModelPatcher of ``module`` (made once and kept on the module)."""
    patcher = getattr(module, "_avatar_cascade_patcher", None)
    if patcher is None:
        container = ModelContainer(module)
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        patcher = comfy.model_patcher.ModelPatcher(
            container, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device(), size=size
        )
        object.__setattr__(module, "_avatar_cascade_patcher", patcher)
    return patcher


def compute_device() -> torch.device:
    """The device models compute on: ComfyUI's torch device, else CUDA when present, else CPU."""
    if HAS_COMFY:
        return mm.get_torch_device()
    from avatar_cascade.core.runtime import default_device

    return default_device()


@contextlib.contextmanager
def _comfy_model_loader(modules: list[torch.nn.Module]):
    from avatar_cascade.models.offload import is_group_offloaded, make_streamable

    # Group-offloaded DiTs (the DiT loader's low-VRAM modes) place their own blocks: not ComfyUI's to move.
    placed = [m for m in modules if not is_group_offloaded(m)]
    for m in placed:  # every weighted layer can then run with its weights left offloaded (models.offload)
        make_streamable(m)
    # No forced full load: ComfyUI loads the pack's models partially when VRAM is short, as its own
    # (fp8 files stay fp8, models.cast); a native MODEL input is loaded by ComfyUI itself (nodes/comfy_native.py).
    if placed:
        mm.load_models_gpu([patcher_for(m) for m in placed])
    yield


class ComfyReplicaHost(ReplicaHost):
    """The refiner's model replicas on extra GPUs, under ComfyUI's model management: before a replica
    is copied, ComfyUI frees room on that device (unloading its idle models there); while it lives, it
    is one of ComfyUI's loaded models (a ModelPatcher with that load device), so ComfyUI's free-memory
    figures and "unload models" count it; :meth:`release` takes it off the list again."""

    def __init__(self) -> None:
        self._patchers: dict[int, object] = {}

    def reserve(self, device: torch.device, nbytes: int) -> None:
        mm.free_memory(nbytes * 1.1 + mm.minimum_inference_memory(), device)

    def adopt(self, modules: list[torch.nn.Module], device: torch.device) -> None:
        patchers = []
        for m in modules:
            size = sum(p.numel() * p.element_size() for p in m.parameters())
            patcher = comfy.model_patcher.ModelPatcher(
                ModelContainer(m), load_device=device, offload_device=mm.unet_offload_device(), size=size
            )
            self._patchers[id(m)] = patcher
            patchers.append(patcher)
        mm.load_models_gpu(patchers, force_full_load=True)  # the weights are there already: they are counted

    def release(self, modules: list[torch.nn.Module]) -> None:
        gone = [self._patchers.pop(id(m), None) for m in modules]
        for i in range(len(mm.current_loaded_models) - 1, -1, -1):
            loaded = mm.current_loaded_models[i]
            if any(loaded.model is p for p in gone if p is not None):
                mm.current_loaded_models.pop(i)
                if loaded.model_finalizer is not None:
                    loaded.model_finalizer.detach()
        mm.soft_empty_cache()


class _ComfyProgress(Progress):
    def __init__(self, total: int, desc: str, node_id: str | None) -> None:
        self.bar = comfy.utils.ProgressBar(max(1, total), node_id=node_id)
        self.desc = desc

    def update(self, n: int = 1, preview=None) -> None:
        self.bar.update(n)


def make_runtime(node_id: str | None = None) -> Runtime:
    """A Runtime wired to ComfyUI (or plain torch without it)."""
    if not HAS_COMFY:
        return Runtime(show_progress=False)

    def preview(kind: str, payload) -> None:
        img = preview_image(payload)
        if img is not None:
            comfy.utils.ProgressBar(1, node_id=node_id).update_absolute(1, 1, ("JPEG", img, 512))

    return Runtime(
        device=mm.get_torch_device(),
        offload_device=mm.unet_offload_device(),
        dtype=None,
        progress_factory=lambda total, desc: _ComfyProgress(total, desc, node_id),
        interrupt_check=mm.throw_exception_if_processing_interrupted,
        preview=preview,
        model_loader=_comfy_model_loader,
        replicas=ComfyReplicaHost(),
        free_memory=lambda device: int(mm.get_free_memory(device)),  # what ComfyUI counts free (its own models)
    )


def preview_image(payload):
    """A PIL image from a uint8 frame ``[H,W,3]`` / clip ``[T,H,W,3]`` (middle frame) / batch."""
    from PIL import Image

    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        return None
    frame = payload
    if frame.ndim == 4:
        frame = frame[frame.shape[0] // 2]
    return Image.fromarray(frame.cpu().numpy())


def intermediate_device() -> torch.device:
    return mm.intermediate_device() if HAS_COMFY else torch.device("cpu")


def intermediate_dtype() -> torch.dtype:
    """The dtype of IMAGE tensors between nodes: float32, or float16 where a newer ComfyUI runs with fp16
    intermediates (``model_management.intermediate_dtype``, feature-detected; IMAGE inputs are never assumed
    float32: the stages convert what they get)."""
    fn = getattr(mm, "intermediate_dtype", None) if HAS_COMFY else None
    return fn() if callable(fn) else torch.float32


def as_image(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames ``[N,H,W,3]`` as a ComfyUI IMAGE (0..1 on the intermediate device, in its dtype)."""
    return frames.to(intermediate_device()).to(intermediate_dtype()).div(255)


def video_output(path: Path):
    """ComfyUI's VIDEO for a written file (VideoFromFile), or the path outside ComfyUI."""
    if HAS_COMFY:
        try:
            from comfy_api.input_impl import VideoFromFile

            return VideoFromFile(str(path))
        except ImportError:  # older ComfyUI without comfy_api
            pass
    return str(path)


def ui_video(path: Path) -> dict:
    """The ``ui`` payload that shows a saved video in the node (as SaveVideo does)."""
    base = output_dir().resolve()
    rel = path.resolve().relative_to(base)
    return {
        "images": [
            {
                "filename": rel.name,
                "subfolder": rel.parent.as_posix() if rel.parent != Path(".") else "",
                "type": "output",
            }
        ],
        "animated": (True,),
    }
