"""RIFE 4.x IFNet (Huang et al., "Real-Time Intermediate Flow Estimation for Video Frame Interpolation",
ECCV 2022; Practical-RIFE 4.7 - 4.25 checkpoints) from user-supplied weights in ``models/frame_interpolation``.

Written after the reference architecture (hzwer/Practical-RIFE ``IFNet_HDv3``, as ComfyUI-Frame-Interpolation
and vs-rife load it) so its checkpoints load strictly, key for key:

* ``encode``: a small feature head run on each frame; 4.7 - 4.9 (``rife47`` / ``rife49``): ``Conv2d(3, 16,
  3, s2)`` then ``ConvTranspose2d(16, 4, 4, s2)`` (4 feature channels); 4.17+ (``rife417``): ``cnn0..cnn3``
  with LeakyReLU, 32 hidden, 8 feature channels;
* four ``IFBlock`` (``block0..block3``, widths 192 / 128 / 96 / 64) from coarse to fine: each resizes its
  input by ``1 / scale``, runs ``conv0`` (two stride-2 convs + LeakyReLU 0.2), eight ``ResConv`` (3x3 conv
  times a learned per-channel ``beta`` plus the input, LeakyReLU) and ``lastconv`` (``ConvTranspose2d(c, 24,
  4, s2)`` + ``PixelShuffle(2)``), and returns a flow update (4 channels: to frame 0 and to frame 1) and a
  fusion-mask logit; block 0 sees both frames, their features and the timestep channel, blocks 1 - 3 the
  frames and features warped by the current flow, the timestep and the mask;
* the output: both frames backward-warped by the final flow (``grid_sample``, border padding,
  ``align_corners=True``) and fused with ``sigmoid(mask)``.

Inference as the reference's: the timestep is an input channel (any ``t`` in (0, 1), not only the middle),
``scale_list = [8, 4, 2, 1] / scale`` (``scale`` 0.5 for 4K content), frames padded at the bottom / right to a
multiple of :func:`pad_multiple`, and ``ensemble`` also runs every block on the swapped pair and averages.

A ``.pth`` converted to safetensors with its state-dict keys unchanged loads here; a ``module.`` prefix (the
training code's DataParallel ``flownet.pkl``) is removed as the RIFE loaders do. Only safetensors are read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.models.files import read_safetensors, resolve_model_path, strict_load, strip_prefix

log = logging.getLogger(__name__)

RIFE_FOLDER = "frame_interpolation"  # ComfyUI core's models/frame_interpolation (folder_paths)
VERSIONS = ("4.7", "4.17")
_IN_FIRST = 7  # two RGB frames + the timestep channel
_IN_NEXT = 8 + 4  # two warped RGB frames, timestep, mask (8) + the current flow (4)


@dataclass(frozen=True)
class RifeConfig:
    """Shape of an IFNet. ``version``: ``"4.7"`` (rife47 / rife48 / rife49) or ``"4.17"`` (rife417 ..);
    ``widths``: channels of ``block0..block3`` (the releases: 192, 128, 96, 64)."""

    version: str = "4.7"
    widths: tuple[int, int, int, int] = (192, 128, 96, 64)

    @property
    def feature_channels(self) -> int:
        return 4 if self.version == "4.7" else 8


class ResConv(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, True))


class IFBlock(nn.Module):
    """One coarse-to-fine step: ``(x, flow, scale) -> (flow update, mask logit)`` at the input's size."""

    def __init__(self, in_planes: int, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 2), _conv(c // 2, c, 2))
        self.convblock = nn.Sequential(*(ResConv(c) for _ in range(8)))
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 6, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: float):
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
            x = torch.cat((x, flow), 1)
        tmp = self.lastconv(self.convblock(self.conv0(x)))
        tmp = F.interpolate(tmp, scale_factor=scale, mode="bilinear", align_corners=False)
        return tmp[:, :4] * scale, tmp[:, 4:5]


class Head(nn.Module):
    """The 4.17+ feature head (``encode.cnn0..cnn3``)."""

    def __init__(self, hidden: int = 32, out: int = 8) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` ``[N, C, H, W]`` sampled at ``x + flow(x)`` (pixels; bilinear, border; the reference's warp)."""
    n, _, h, w = flow.shape
    gx = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    gy = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    fx = flow[:, 0:1] / ((image.shape[3] - 1.0) / 2.0)
    fy = flow[:, 1:2] / ((image.shape[2] - 1.0) / 2.0)
    grid = torch.cat((gx + fx, gy + fy), 1).permute(0, 2, 3, 1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _swap(flow: torch.Tensor) -> torch.Tensor:
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)


class IFNet(nn.Module):
    """RIFE 4.x flow network; :meth:`forward` returns the frame at ``timestep`` between ``img0`` and ``img1``."""

    def __init__(self, config: RifeConfig = RifeConfig()) -> None:
        super().__init__()
        if config.version not in VERSIONS:
            raise ValueError(f"RIFE version {config.version!r}: use one of {VERSIONS}")
        self.config = config
        fc = config.feature_channels
        if config.version == "4.7":
            self.encode = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ConvTranspose2d(16, fc, 4, 2, 1))
        else:
            self.encode = Head(32, fc)
        c0, c1, c2, c3 = config.widths
        self.block0 = IFBlock(_IN_FIRST + 2 * fc, c0)
        self.block1 = IFBlock(_IN_NEXT + 2 * fc, c1)
        self.block2 = IFBlock(_IN_NEXT + 2 * fc, c2)
        self.block3 = IFBlock(_IN_NEXT + 2 * fc, c3)

    def forward(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        timestep: float | torch.Tensor = 0.5,
        scale_list: tuple[float, ...] = (8, 4, 2, 1),
        ensemble: bool = False,
    ) -> torch.Tensor:
        """``img0``, ``img1``: ``[N, 3, H, W]`` in 0..1, sides multiples of :func:`pad_multiple` (see
        :func:`interpolate`); ``timestep`` a float or ``[N, 1, 1, 1]``. Returns ``[N, 3, H, W]``."""
        img0, img1 = img0.clamp(0, 1), img1.clamp(0, 1)
        n, _, h, w = img0.shape
        t = torch.as_tensor(timestep, dtype=img0.dtype, device=img0.device).reshape(-1, 1, 1, 1)
        t = t.expand(n, 1, h, w)
        f0, f1 = self.encode(img0), self.encode(img1)
        blocks = (self.block0, self.block1, self.block2, self.block3)
        flow = mask = None
        w0, w1 = img0, img1
        for block, scale in zip(blocks, scale_list):
            if flow is None:
                flow, mask = block(torch.cat((img0, img1, f0, f1, t), 1), None, scale)
                if ensemble:
                    f_, m_ = block(torch.cat((img1, img0, f1, f0, 1 - t), 1), None, scale)
                    flow, mask = (flow + _swap(f_)) / 2, (mask - m_) / 2
            else:
                wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                fd, m0 = block(torch.cat((w0, w1, wf0, wf1, t, mask), 1), flow, scale)
                if ensemble:
                    f_, m_ = block(torch.cat((w1, w0, wf1, wf0, 1 - t, -mask), 1), _swap(flow), scale)
                    fd, m0 = (fd + _swap(f_)) / 2, (m0 - m_) / 2
                mask = m0
                flow = flow + fd
            w0, w1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        return w0 * m + w1 * (1 - m)


def scale_list(scale: float = 1.0) -> tuple[float, ...]:
    """The blocks' downscale factors for ``scale`` (1.0 for up to 1080p, 0.5 for 4K): ``[8, 4, 2, 1] / scale``."""
    return (8 / scale, 4 / scale, 2 / scale, 1 / scale)


def pad_multiple(scale: float = 1.0) -> int:
    """Frames are padded to a multiple of this: block 0 works at ``scale / 32`` of the frame (its input resized
    by ``scale / 8``, then two stride-2 convs), so sides must divide by ``32 / scale``; at least 64, as
    ComfyUI-Frame-Interpolation pads (Practical-RIFE's script pads to 128; only the border context differs)."""
    return max(64, int(round(32 / scale)))


@torch.inference_mode()
def interpolate(
    model: IFNet, img0: torch.Tensor, img1: torch.Tensor, timestep, scale: float = 1.0, ensemble: bool = False
) -> torch.Tensor:
    """Frames ``[N, 3, H, W]`` (0..1, any size) -> the frames at ``timestep``: padded (zeros, bottom /
    right) to :func:`pad_multiple`, run, cropped back."""
    h, w = img0.shape[-2:]
    m = pad_multiple(scale)
    ph, pw = -(-h // m) * m, -(-w // m) * m
    pad = (0, pw - w, 0, ph - h)
    out = model(F.pad(img0, pad), F.pad(img1, pad), timestep, scale_list(scale), ensemble)
    return out[:, :, :h, :w]


# -- files -------------------------------------------------------------------------------------


def resolve_rife_model(models_dir: str | Path, name: str, input_name: str = "--interpolator-model") -> Path:
    """``name`` resolved strictly inside ``models_dir/frame_interpolation`` (no absolute paths, no ``..``)."""
    return resolve_model_path([Path(models_dir) / RIFE_FOLDER], name, input_name=input_name)


def config_from_keys(shapes: dict[str, tuple[int, ...]], input_name: str, path: Path) -> RifeConfig:
    """The :class:`RifeConfig` of a RIFE state dict's key -> shape table, or a :class:`ModelFileError`."""
    fix = (
        "put a RIFE 4.7 / 4.9 / 4.17 - 4.25 flownet converted to safetensors (keys unchanged) in "
        "models/frame_interpolation/"
    )
    if any(k.startswith("block4.") for k in shapes):
        raise ModelFileError(input_name, path.name, "is a RIFE 4.26+ IFNet (five blocks), not run here yet", fix)
    if "block0.conv0.0.0.weight" not in shapes:
        raise ModelFileError(input_name, path.name, "is not a RIFE 4.x IFNet (no block0.conv0.* weights)", fix)
    if "encode.0.weight" in shapes:
        version = "4.7"
    elif "encode.cnn0.weight" in shapes:
        version = "4.17"
    else:
        problem = "is an older RIFE (4.0 - 4.6: no feature encoder), which this pack does not run"
        raise ModelFileError(input_name, path.name, problem, fix)
    widths = tuple(
        int(shapes[f"block{i}.conv0.1.0.weight"][0]) for i in range(4) if f"block{i}.conv0.1.0.weight" in shapes
    )
    if len(widths) != 4:
        raise ModelFileError(
            input_name, path.name, "has fewer than four IFNet blocks", "use an unmodified RIFE flownet"
        )
    return RifeConfig(version=version, widths=widths)  # type: ignore[arg-type]


def load_rife(path: str | Path, input_name: str = "interpolator_model", device: str = "cpu") -> IFNet:
    """An :class:`IFNet` in eval mode with the weights of a ``.safetensors`` RIFE flownet (strict)."""
    path = Path(path)
    state_dict, _ = read_safetensors(path, input_name, device=device)
    state_dict = strip_prefix(state_dict, ("module.",))
    config = config_from_keys({k: tuple(v.shape) for k, v in state_dict.items()}, input_name, path)
    with torch.device("meta"):
        model = IFNet(config)
    strict_load(model, state_dict, input_name, path.name, f"a RIFE {config.version} IFNet")
    log.info("RIFE %s IFNet %s (widths %s)", config.version, path.name, config.widths)
    return model.float().eval()
