"""Model recipes: how to load the same models again in another process (a Ray worker).

A :class:`ModelRecipe` describes loaded handles by their files, not their weights: the DiT
file(s), its LoRA stack, its audio adapter, the VAE and the CLIP-vision file, each with the
:func:`~avatar_cascade.models.files.file_identity` the driver computed and the dtype its weights
have. It is small and picklable. :meth:`ModelRecipe.load` loads the models on the worker through
the same loaders as the driver, after finding every file there (:func:`find_on_worker`):

1. ``path_map``: ``driver prefix -> worker prefix`` pairs (``"/home/me/models=/mnt/models"``);
2. the driver's own path (a folder shared at the same place on every node);
3. the file's place in the worker's own model folder ``$AVATAR_CASCADE_MODELS`` (the path below
   the model-kind folder, e.g. ``diffusion_models/wan/x.safetensors``: the same names).

A file found with another identity (another file of that name) is refused, so a worker never
renders with other weights than the driver's cache keys say.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.models.files import file_identity

# Model-kind folders of a ComfyUI models/ tree, where a file's name starts.
KIND_FOLDERS = ("diffusion_models", "unet", "checkpoints", "vae", "loras", "clip_vision", "model_patches")
MODELS_ENV = "AVATAR_CASCADE_MODELS"
_FIX = (
    "share the models folder at the same path on every node, map it with ray_path_map "
    "('driver folder=worker folder'), or set AVATAR_CASCADE_MODELS to the worker's models folder"
)


@dataclass(frozen=True)
class FileRef:
    """One weights file as the driver loaded it: its path there, its identity and its weights' dtype."""

    path: str
    identity: str
    dtype: str = ""

    @classmethod
    def of(cls, path: Path | None, identity: str, what: str, module: torch.nn.Module | None = None) -> FileRef:
        if path is None:
            raise InputError(
                "backend",
                "ray",
                f"the {what} was not loaded from a file, so Ray workers cannot load it",
                "load it with the pack's loader nodes from a models folder the workers can read",
            )
        return cls(str(path), identity, "" if module is None else str(weights_dtype(module)).removeprefix("torch."))

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return getattr(torch, self.dtype) if self.dtype else None


def weights_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype that holds most of ``module``'s weights (a few norms may be kept in float32)."""
    count: Counter = Counter()
    for p in module.parameters():
        if p.is_floating_point():
            count[p.dtype] += p.numel()
    return count.most_common(1)[0][0] if count else torch.float32


@dataclass(frozen=True)
class ModelRecipe:
    """What a worker loads to render as the driver does: DiT (+ LoRAs, adapter), VAE, CLIP vision."""

    dit: FileRef
    vae: FileRef
    dit_2: FileRef | None = None
    boundary_ratio: float | None = None
    loras: tuple[tuple[FileRef, float, str], ...] = ()
    adapter: tuple[FileRef, float] | None = None
    image_encoder: FileRef | None = None
    attention: str = "auto"
    offload: str = "none"

    @classmethod
    def of(cls, dit, vae, image_encoder=None) -> ModelRecipe:
        """The recipe of loaded handles (``WanDiT``, ``WanVAE``, optional ``CLIPVision``)."""
        ad = dit.audio_adapter
        return cls(
            dit=FileRef.of(dit.path, dit.identity, "DiT", dit.transformer),
            dit_2=None if dit.transformer_2 is None else FileRef.of(dit.path_2, dit.identity_2, "low-noise DiT"),
            boundary_ratio=dit.boundary_ratio,
            loras=tuple((FileRef.of(s.path, s.identity, "LoRA"), float(s.strength), s.apply_to) for s in dit.loras),
            adapter=None if ad is None else (FileRef.of(ad.path, ad.identity, "audio adapter"), ad.strength),
            vae=FileRef.of(vae.path, vae.identity, "VAE", vae.vae),
            image_encoder=None
            if image_encoder is None
            else FileRef.of(image_encoder.path, image_encoder.identity, "CLIP vision", image_encoder.model),
            attention=dit.attention,
            offload=dit.offload,
        )

    def files(self) -> list[FileRef]:
        out = [self.dit, self.vae, *(r for r, _, _ in self.loras)]
        out += [r for r in (self.dit_2, self.image_encoder, self.adapter[0] if self.adapter else None) if r]
        return out

    def load(self, path_map: Sequence[tuple[str, str]] = (), device: torch.device | None = None) -> tuple:
        """``(dit, vae, image_encoder)`` loaded here from the same files (checked by identity)."""
        from avatar_cascade.models.clip_vision import load_clip_vision
        from avatar_cascade.models.dit_runtime import configure_dit
        from avatar_cascade.models.wan_dit import load_wan_dit, load_wan_experts
        from avatar_cascade.models.wan_vae import load_wan_vae

        find = {r.path: find_on_worker(r, path_map) for r in self.files()}
        if self.dit_2 is None:
            dit = load_wan_dit(find[self.dit.path], dtype=self.dit.torch_dtype)
        else:
            dit = load_wan_experts(
                find[self.dit.path], find[self.dit_2.path], self.boundary_ratio, dtype=self.dit.torch_dtype
            )
        if self.loras:
            from avatar_cascade.models.lora import apply_loras, lora_spec

            stack = tuple(lora_spec(find[r.path], strength, apply_to) for r, strength, apply_to in self.loras)
            dit = apply_loras(dit, stack)
        if self.adapter is not None:
            from avatar_cascade.models.audio_adapter import load_audio_adapter

            ref, strength = self.adapter
            dit = load_audio_adapter(find[ref.path], dit, strength=strength).attach(dit)
        dit = configure_dit(dit, self.attention, self.offload, device)
        vae = load_wan_vae(find[self.vae.path], dtype=self.vae.torch_dtype)
        ie = self.image_encoder
        image_encoder = None if ie is None else load_clip_vision(find[ie.path], dtype=ie.torch_dtype)
        return dit, vae, image_encoder


def parse_path_map(text: str | Sequence[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    """``"/a/models=/mnt/models; D:/m=/m"`` -> ``(("/a/models", "/mnt/models"), ("D:/m", "/m"))``."""
    if not isinstance(text, str):
        return tuple((str(a), str(b)) for a, b in (text or ()))
    pairs = []
    for part in (p.strip() for p in text.replace("\n", ";").split(";")):
        if not part:
            continue
        driver, sep, worker = part.partition("=")
        if not sep or not driver.strip() or not worker.strip():
            raise InputError("ray_path_map", text, f"cannot read {part!r}", "write 'driver folder=worker folder; ...'")
        pairs.append((driver.strip(), worker.strip()))
    return tuple(pairs)


def candidates(path: str, path_map: Sequence[tuple[str, str]] = (), models_dir: str | None = None) -> list[Path]:
    """Where a worker looks for the driver's ``path``, in order (see the module docstring)."""
    posix = path.replace("\\", "/")
    out = []
    for driver, worker in path_map:
        prefix = driver.replace("\\", "/").rstrip("/") + "/"
        if posix.startswith(prefix):
            out.append(Path(worker) / posix[len(prefix) :])
    out.append(Path(path))
    parts = PurePosixPath(posix).parts
    kinds = [i for i, p in enumerate(parts) if p in KIND_FOLDERS]
    if models_dir and kinds:
        out.append(Path(models_dir).joinpath(*parts[kinds[-1] :]))
    return list(dict.fromkeys(out))


def find_on_worker(ref: FileRef, path_map: Sequence[tuple[str, str]] = ()) -> Path:
    """The worker's copy of ``ref``: the first candidate that exists, checked to be the same file."""
    tried = candidates(ref.path, path_map, os.environ.get(MODELS_ENV))
    for p in tried:
        if p.is_file() or p.is_dir():
            if file_identity(p) != ref.identity:
                raise ModelFileError(
                    "ray worker",
                    p,
                    f"this is not the file the driver loaded as {ref.path} (its size or contents differ)",
                    "copy the driver's file to the worker (the same name is not enough: the clip cache keys "
                    "hold each file's identity)",
                )
            return p
    shown = ", ".join(str(p) for p in tried)
    raise ModelFileError("ray worker", ref.path, f"no such file on this worker (tried {shown})", _FIX)
