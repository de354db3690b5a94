"""First-Last-Frame Refiner settings: seed, batching, sampler, negative-frame guidance, devices, backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import seed_setting
from avatar_cascade.core.settings import Settings, nested, setting
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.refiner.gate import GateSettings

MAX_NEGATIVE_FRAME_STRENGTH = 10.0


def devices_from_text(text: str | tuple | list | None) -> tuple[str, ...]:
    """``'auto'`` / ``''`` -> ``()`` (every local GPU); ``'cuda:0, cuda:1'`` -> ``('cuda:0', 'cuda:1')``."""
    if isinstance(text, (tuple, list)):
        return tuple(text)
    text = (text or "").strip()
    return () if text.lower() in ("", "auto") else tuple(d.strip() for d in text.split(",") if d.strip())


def devices_to_text(devices: tuple[str, ...]) -> str:
    return ", ".join(devices) if devices else "auto"


BACKENDS = ("local", "ray")


def _check_path_map(name: str, text: str) -> None:
    from avatar_cascade.models.recipe import parse_path_map

    try:
        parse_path_map(text)
    except InputError as exc:
        raise InputError(name, text, exc.problem, exc.fix) from None


def _check_devices(name: str, devices: tuple[str, ...]) -> None:
    for d in devices:
        try:
            torch.device(d)
        except (RuntimeError, TypeError) as exc:
            raise InputError(name, d, "is not a torch device", "use names like cuda:0, cuda:1") from exc


@dataclass(frozen=True, kw_only=True)
class RefinerSettings(Settings):
    """Refiner sampling, batching and guidance.

    Attributes:
        seed: run seed; clip ``k`` uses ``derive_seed(seed, k, reroll offset)``.
        batch_size: clips per forward pass (0 = automatic from free memory).
        sampler: steps / guidance / shift / scheduler (``auto`` = the DiT's preset, InfiniteTalk's with
            an audio adapter).
        negative_frame_strength: ``s`` of negative-frame guidance (0 = off: exactly plain sampling).
        devices: devices to spread clips over, e.g. ``("cuda:0", "cuda:1")``; empty = the runtime
            device plus every other local CUDA device.
        backend: ``"local"`` (this machine's devices) or ``"ray"`` (actors on a Ray cluster).
        ray_address: the cluster (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``).
        ray_workers: Ray actors (0 = one per GPU of the cluster, or one per node without GPUs).
        ray_path_map: ``"driver folder=worker folder; ..."`` for model files at other paths on the workers.
        height: render the sub-clips at this height in pixels (e.g. 720 from 480p keyframes), the width
            following the keyframes' aspect (:mod:`.resolution`); None = the keyframes' size.
        gate: the per-clip quality gate (``gate_tries`` 1 = off; :mod:`.gate`).
    """

    seed: int = seed_setting("Run seed; each window/clip derives its own seed from it.")
    batch_size: int = setting(
        0, tooltip="Clips per forward pass; 0 = automatic from free memory (halved on out-of-memory).",
        min=0, max=64, fix="use 0",
    )  # fmt: skip
    sampler: SamplerSettings = nested(SamplerSettings)
    negative_frame_strength: float = setting(
        0.0, tooltip="Negative-frame guidance: push each clip away from a blurred, colour-shifted "
        "copy of its keyframes (0 = off; 0.5-2 typical; doubles the DiT time).",
        min=0.0, max=MAX_NEGATIVE_FRAME_STRENGTH, step=0.05, fix="use 0 or 0.5-2",
    )  # fmt: skip
    devices: tuple[str, ...] = setting(
        (), kind="STRING", tooltip="GPUs to spread clips over: 'auto' = every local GPU (each extra GPU holds its "
        "own copy of the DiT and VAE), or a list such as 'cuda:0, cuda:1'; 'cuda:0' = one GPU.",
        encode=devices_to_text, decode=devices_from_text, validate=_check_devices,
    )  # fmt: skip
    backend: str = setting(
        "local", tooltip="Where clips render: 'local' = this machine's devices (see devices); 'ray' = actors on "
        "a Ray cluster (ray_address) that load the same model files and send finished clips back to this "
        "machine's clip cache.", choices=BACKENDS,
    )  # fmt: skip
    ray_address: str = setting(
        "auto", tooltip="Ray cluster for backend 'ray': 'auto' (the cluster this machine belongs to, or "
        "RAY_ADDRESS), 'host:6379' (the head node) or 'ray://host:10001' (Ray client).",
    )  # fmt: skip
    ray_workers: int = setting(
        0, tooltip="Ray actors, each holding the DiT + VAE (+ CLIP vision) resident: 0 = one per GPU of the "
        "cluster (one per node on a cluster without GPUs).", min=0, max=1024, fix="use 0",
    )  # fmt: skip
    ray_path_map: str = setting(
        "", tooltip="Model files at other paths on the Ray workers: 'driver folder=worker folder; ...'. Empty = "
        "the same paths (a shared folder), else the worker's own AVATAR_CASCADE_MODELS folder by model name.",
        validate=_check_path_map,
    )  # fmt: skip
    height: int | None = setting(
        None, tooltip="Render the sub-clips at this height (e.g. 720 from 480p keyframes: KlingAvatar 2.0's "
        "spatio-temporal cascade); the width follows the keyframes' aspect, the keyframes are resized to it. "
        "0 = the keyframes' size.", min=16, max=4320, none_as=0, fix="use 720, or 0 for the keyframes' size",
    )  # fmt: skip
    gate: GateSettings = nested(GateSettings, prefix="gate_")
