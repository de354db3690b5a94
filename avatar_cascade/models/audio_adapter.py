"""InfiniteTalk / MultiTalk audio adapter on a diffusers ``WanTransformer3DModel``.

The open Wan talking models add to every Wan 2.1 block an audio cross-attention
(``blocks.N.audio_cross_attn.*``) with its input norm (``blocks.N.norm_x.*``), fed by an audio
projection (``audio_proj.*``) of windowed wav2vec2 features; their adapter files hold just
those weights. This module loads such a file (original release, ComfyUI ``model_patches``
file, or with a ``diffusion_model.`` prefix; fp8 files are dequantized) onto our DiT
without touching the DiT's own weights. Reference (Apache-2.0): MeiGen-AI/InfiniteTalk
``wan/modules/multitalk_model.py``, ``wan/modules/attention.py``, ``wan/multitalk.py``.

How it runs: nothing is attached to the transformer outside :meth:`AudioAdapter.audio_context`.
Inside it, torch hooks add ``audio_cross_attn(norm_x(x), tokens)`` after each block's text
cross-attention (a pre-hook on ``norm2`` keeps the block input ``x``, a hook on ``attn2``
returns ``attn2(x) + audio`` so the block adds both), as the reference's block does. On exit
the hooks are removed, so the same transformer serves un-adapted graph branches unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.models.audio_attention import AudioBlock
from avatar_cascade.models.audio_proj import AudioAdapterConfig, AudioProjModel
from avatar_cascade.models.files import (
    check_kind,
    checkpoint_kind,
    dequantize,
    file_identity,
    read_safetensors,
    read_safetensors_header,
    strict_load,
    strip_prefix,
)
from avatar_cascade.models.wan_dit import WanDiT

log = logging.getLogger(__name__)

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
TRAINED_ON = ("wan2.1-i2v-14b",)  # InfiniteTalk / MultiTalk: Wan 2.1 I2V 14B 480P
KNOWN_BASES = (*TRAINED_ON, "wan2.1-flf2v-14b", "avatar-cascade-tiny-wan")
_FIX_FILE = (
    "pick an InfiniteTalk or MultiTalk adapter file for Wan 2.1 14B (InfiniteTalk's single/infinitetalk.safetensors, "
    "or ComfyUI's repackaged model_patches file) from models/model_patches or models/diffusion_models"
)


class AudioAdapterModule(nn.Module):
    """The adapter's weights, laid out as the published files: ``audio_proj.*`` and ``blocks.N.*``."""

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_proj = AudioProjModel(config)
        self.blocks = nn.ModuleList(AudioBlock(config) for _ in range(config.num_layers))


def _dit_sizes(transformer: Any) -> tuple[int, int, int]:
    cfg = transformer.config
    return cfg.num_attention_heads * cfg.attention_head_dim, cfg.num_layers, cfg.num_attention_heads


class AudioAdapter:
    """A loaded adapter; ``attach`` binds it to a DiT, ``audio_context`` conditions that DiT's forwards.

    Attributes:
        module: the weights (:class:`AudioAdapterModule`); placed with the transformer by
            ``runtime.use_models(*dit.modules())`` (else moved to the DiT's device, with a warning).
        config: sizes.
        strength: scale of the audio residual (1.0 = as trained; ComfyUI calls it audio_scale).
        identity: file identity for cache keys.
    """

    def __init__(
        self, module: AudioAdapterModule, identity: str = "", path: Path | None = None, strength: float = 1.0
    ) -> None:
        self.module = module
        self.config: AudioAdapterConfig = module.config
        self.identity = identity
        self.path = path
        self.strength = float(strength)
        self.transformers: list[Any] = []  # the bound DiT's transformer(s): both experts of a Wan 2.2 A14B pair
        self._handles: list[Any] = []
        self._audio: torch.Tensor | None = None
        self._tokens: dict[tuple, torch.Tensor] = {}
        self._step_tokens: torch.Tensor | None = None  # tokens of the forward in progress
        self._step_dtype: torch.dtype | None = None
        self._inputs: dict[int, torch.Tensor] = {}  # block index -> block input before the text cross-attention
        self._moved_from: torch.device | None = None
        self._lead = 0  # latent frames in front of the clip that hear silence (silent_lead)

    def modules(self) -> list[nn.Module]:
        """The adapter weights, placed with the DiT (``WanDiT.modules()`` lists them)."""
        return [self.module]

    def cache_identity(self) -> str:
        """Id for cache keys: the file and the strength (the DiT's key covers both too)."""
        return f"{self.identity}@{self.strength:g}"

    # ------------------------------------------------------------------ binding

    def check_fits(self, transformer: Any, input_name: str = "adapter_name") -> None:
        """Raise a ModelFileError when the adapter's sizes do not match ``transformer``."""
        dim, layers, heads = _dit_sizes(transformer)
        c = self.config
        if (c.dim, c.num_layers) != (dim, layers):
            raise ModelFileError(
                input_name,
                self.path or "<adapter>",
                f"this audio adapter is for a DiT {c.dim} wide with {c.num_layers} blocks, but the DiT is {dim} wide "
                f"with {layers} blocks",
                "use an adapter made for this DiT (InfiniteTalk/MultiTalk adapters fit Wan 2.1 14B I2V/FLF2V only)",
            )
        if c.num_heads != heads:
            raise ModelFileError(
                input_name, self.path or "<adapter>", f"built for {c.num_heads} heads, DiT has {heads}", "reload it"
            )

    @property
    def transformer(self) -> Any:
        """The bound transformer (the first expert), or None when detached."""
        return self.transformers[0] if self.transformers else None

    def attach(self, dit: WanDiT) -> WanDiT:
        """Bind to ``dit``'s transformer(s); returns a shallow copy of the handle with ``audio_adapter`` set.

        The given handle and the transformer's weights are unchanged; the adapter acts only
        inside :meth:`audio_context`. A Wan 2.2 A14B pair gets the adapter in both experts.
        """
        experts = [m for _, m in dit.experts()]
        if self.transformers and [id(t) for t in self.transformers] != [id(t) for t in experts]:
            raise RuntimeError("this audio adapter is attached to another DiT; detach() it or load it again")
        for t in experts:
            self.check_fits(t)
        self.transformers = experts
        handle = copy.copy(dit)
        handle.audio_adapter = self
        return handle

    def detach(self) -> None:
        """Unbind from the DiT (removes any hooks); the DiT computes exactly its base output."""
        self._remove_hooks()
        self.transformers = []

    # ------------------------------------------------------------------ conditioning

    @contextlib.contextmanager
    def audio_context(self, audio: torch.Tensor | None) -> Iterator[None]:
        """Condition the attached DiT's forwards on ``audio`` while the block runs.

        Args:
            audio: ``[B, F, W, L, D]`` (or one row ``[F, W, L, D]``): per batch row of the
                forward, F pixel frames (4n+1) x W window taps x L wav2vec2 layers x D channels
                (see :mod:`.audio_proj`). Rows must equal the forward's batch, or be 1 (shared).
                ``None`` is the reference's unconditional audio: zero features for every row.
        """
        if not self.transformers:
            raise RuntimeError("attach(dit) the audio adapter before using audio_context")
        if self._handles:
            raise RuntimeError("audio_context is already active on this adapter (contexts do not nest)")
        self._audio = self.prepare_audio(audio)
        for t in self.transformers:
            self._handles += [
                t.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
                t.register_forward_hook(self._post_forward),
            ]
            # diffusers' blocks: norm2 -> attn2 (text cross-attention); ComfyUI's: norm3 -> cross_attn
            norm, attn = getattr(t, "audio_hook_points", ("norm2", "attn2"))
            for i, block in enumerate(t.blocks):
                self._handles.append(getattr(block, norm).register_forward_pre_hook(partial(self._keep_input, i)))
                self._handles.append(getattr(block, attn).register_forward_hook(partial(self._add_audio, i)))
        try:
            yield
        finally:
            self._remove_hooks()

    def prepare_audio(self, audio: torch.Tensor | None) -> torch.Tensor | None:
        """Check ``[B,F,W,L,D]`` features against the adapter and flatten to ``[B,F,W,L*D]``.

        A stack with one layer too many (wav2vec2's ``hidden_states[0]`` included) loses layer 0.
        """
        if audio is None:
            return None
        c = self.config
        if audio.ndim == 4:
            audio = audio[None]
        if audio.ndim == 6:
            raise InputError(
                "audio", tuple(audio.shape), "two-speaker audio is not supported", "pass one speaker's audio"
            )
        if audio.ndim != 5 or audio.shape[2] != c.audio_window:
            raise ValueError(f"audio must be [B, F, {c.audio_window}, layers, channels], got {tuple(audio.shape)}")
        layers, channels = audio.shape[3], audio.shape[4]
        if layers * channels != c.feature_size and (layers - 1) * channels == c.feature_size:
            audio = audio[:, :, :, 1:]
        elif layers * channels != c.feature_size:
            known = f", {c.feature_size // 768} layers x 768 of chinese-wav2vec2-base" if c.feature_size == 9216 else ""
            raise InputError(
                "audio_encoder",
                f"{layers} layers x {channels} channels",
                f"these audio features do not fit the audio adapter, which reads {c.feature_size} values per "
                f"window tap{known}",
                "extract the features with the audio encoder the adapter was trained with "
                "(InfiniteTalk/MultiTalk: chinese-wav2vec2-base)",
            )
        return audio.flatten(3)

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._audio = None
        self._tokens = {}
        self._post_forward()
        if self._moved_from is not None:
            self.module.to(self._moved_from)
            self._moved_from = None

    def _place(self, device: torch.device) -> None:
        here = next(self.module.parameters()).device
        if here != device:
            log.warning("audio adapter was on %s, the DiT runs on %s: moving it (place it with the DiT)", here, device)
            self._moved_from = self._moved_from or here
            self.module.to(device)

    @contextlib.contextmanager
    def silent_lead(self, frames: int) -> Iterator[None]:
        """While the block runs, the forwards have ``frames`` latent frames in front of the clip (VACE reference
        frames): they get the tokens of silence (a first latent frame of zero features), the clip its audio."""
        self._lead = int(frames)
        try:
            yield
        finally:
            self._lead = 0

    def tokens(self, batch: int, latent_frames: int, device: torch.device) -> torch.Tensor:
        """Audio tokens ``[batch, latent_frames, context_tokens, output_dim]`` for the active audio (cached);
        the first :meth:`silent_lead` frames of them are silent."""
        lead = self._lead
        clip = self._clip_tokens(batch, latent_frames - lead, device)
        if not lead:
            return clip
        c = self.config
        with torch.no_grad():
            silent = self.module.audio_proj(torch.zeros(1, 1, c.audio_window, c.feature_size, device=device))
        return torch.cat([silent.to(clip.dtype).expand(batch, lead, *silent.shape[2:]), clip], dim=1)

    def _clip_tokens(self, batch: int, latent_frames: int, device: torch.device) -> torch.Tensor:
        key = (batch, latent_frames, str(device))
        if key in self._tokens:
            return self._tokens[key]
        c = self.config
        frames = (latent_frames - 1) * c.vae_scale + 1
        audio = self._audio
        if audio is None:  # the reference's silent branch: zero features for every row
            audio = torch.zeros(batch, frames, c.audio_window, c.feature_size)
        if audio.shape[1] != frames:
            raise ValueError(f"audio covers {audio.shape[1]} frames; the forward has {frames} ({latent_frames} latent)")
        if audio.shape[0] not in (1, batch):
            raise ValueError(f"audio has {audio.shape[0]} rows; the DiT forward has {batch}")
        with torch.no_grad():
            tok = self.module.audio_proj(audio.to(device))
        self._tokens[key] = tok.expand(batch, *tok.shape[1:])
        return self._tokens[key]

    def _pre_forward(self, transformer: Any, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        p_t = transformer.config.patch_size[0]
        self._place(hidden.device)
        self._step_tokens = self.tokens(hidden.shape[0], hidden.shape[2] // p_t, hidden.device)
        self._step_dtype = getattr(transformer, "block_dtype", None) or hidden.dtype

    def _post_forward(self, *_: Any) -> None:
        self._step_tokens, self._step_dtype, self._inputs = None, None, {}

    def _keep_input(self, index: int, _module: nn.Module, args: tuple) -> None:
        if self._step_tokens is not None:  # norm2 sees hidden_states.float(): back to the block's dtype is exact
            self._inputs[index] = args[0].to(self._step_dtype)

    def _add_audio(self, index: int, _module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        x = self._inputs.pop(index, None)
        if x is None or self._step_tokens is None:
            return None
        # The block then adds this to x: x + attn2(x) + audio_cross_attn(norm_x(x + attn2(x))), as the reference.
        return output + self.module.blocks[index](x + output, self._step_tokens) * self.strength


# ---------------------------------------------------------------------- loading


def config_from_shapes(
    shapes: Mapping[str, tuple[int, ...]], num_heads: int, input_name: str = "adapter_name", path: object = ""
) -> AudioAdapterConfig:
    """Adapter sizes from a key -> shape table in the published layout (prefix already removed)."""
    try:
        proj1, proj1_vf = shapes["audio_proj.proj1.weight"], shapes["audio_proj.proj1_vf.weight"]
        output_dim = shapes["audio_proj.norm.weight"][0]
        config = AudioAdapterConfig(
            dim=shapes["blocks.0.audio_cross_attn.q_linear.weight"][0],
            num_layers=len({m[1] for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}),
            num_heads=num_heads,
            feature_size=proj1[1] // 5,
            intermediate_dim=proj1[0],
            output_dim=output_dim,
            context_tokens=shapes["audio_proj.proj3.weight"][0] // output_dim,
        )
    except (KeyError, IndexError) as err:
        raise ModelFileError(input_name, path, f"this audio adapter lacks {err}", _FIX_FILE) from err
    if proj1[1] % 5 or proj1_vf[1] != config.window_vf * config.feature_size:
        raise ModelFileError(
            input_name, path, f"audio window sizes {proj1[1]}/{proj1_vf[1]} are not InfiniteTalk's 5/8 taps", _FIX_FILE
        )
    return config


def _check_adapter_kind(keys: list[str], input_name: str, path: Path) -> None:
    if checkpoint_kind(keys) == "dit" and any(".audio_cross_attn." in k for k in keys):
        raise ModelFileError(
            input_name,
            path,
            "this file is a whole Wan DiT with the audio layers merged in",
            "load the plain Wan 2.1 I2V 14B DiT in the DiT loader and the separate adapter file here",
        )
    check_kind(keys, "audio_adapter", input_name, path)


def load_audio_adapter(
    path: str | Path, dit: WanDiT, input_name: str = "adapter_name", strength: float = 1.0
) -> AudioAdapter:
    """Load an InfiniteTalk/MultiTalk adapter file for ``dit`` (a WanDiT handle), on CPU, in the DiT's dtype.

    Validates every key and shape against the DiT's width and block count (a 14B adapter on
    a 1.3B DiT, an unrelated file or a merged model raise :class:`ModelFileError`). The
    returned adapter is not attached yet: call ``adapter.attach(dit)``.
    """
    path = Path(path)
    shapes, _ = read_safetensors_header(path, input_name)
    _check_adapter_kind(list(shapes), input_name, path)
    _check_strength(strength)
    state_dict, _ = read_safetensors(path, input_name)
    return audio_adapter_from_state_dict(state_dict, dit, file_identity(path), path, input_name, strength)


def _check_strength(strength: float) -> None:
    if not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= 4.0:
        raise InputError("strength", strength, "must be between 0 and 4", "use 1.0 (as trained); 0 turns lip-sync off")


def audio_adapter_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    dit: WanDiT,
    identity: str,
    path: Path | str | None = None,
    input_name: str = "adapter_name",
    strength: float = 1.0,
) -> AudioAdapter:
    """The adapter of weights already in memory, in the published key layout: a file's, or those of ComfyUI's
    own InfiniteTalk ``MODEL_PATCH`` (ModelPatchLoader builds it from the same file with the same keys)."""
    from accelerate import init_empty_weights

    _check_strength(strength)
    where = path or "<adapter>"
    shapes = strip_prefix({k: tuple(v.shape) for k, v in state_dict.items()}, PREFIXES)
    dim, layers, heads = _dit_sizes(dit.transformer)
    config = config_from_shapes(shapes, heads, input_name, where)
    with init_empty_weights():
        module = AudioAdapterModule(config)
    adapter = AudioAdapter(module, identity, Path(path) if path else None, strength)
    adapter.check_fits(dit.transformer, input_name)
    dtype = getattr(dit.transformer, "block_dtype", None) or getattr(dit.transformer, "compute_dtype", None)
    dtype = dtype or next(dit.transformer.parameters()).dtype
    sd = dequantize(strip_prefix(dict(state_dict), PREFIXES), dtype)
    sd = {k: v.to(dtype) for k, v in sd.items()}
    strict_load(module, sd, input_name, where, f"an audio adapter for a {dim}-wide, {layers}-block Wan DiT")
    module.eval().requires_grad_(False)
    if dit.variant not in KNOWN_BASES:
        log.warning("%s: InfiniteTalk/MultiTalk were trained on Wan 2.1 I2V 14B; %s is untested", where, dit.variant)
    log.info("loaded audio adapter %s (%s, %d blocks) for %s", where, dtype, layers, dit.variant)
    return adapter
