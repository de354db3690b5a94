"""ComfyUI's native model objects driving the cascade: ``MODEL``, ``VAE``, ``CLIP``, ``CLIP_VISION``.

The second (and last) module besides :mod:`nodes.comfy_bridge` that imports ComfyUI. Each native object is
wrapped in a handle with the interface the engine's stages use (``WanDiT``, ``WanVAE``, ``TextEncoder``,
``CLIPVision``), so the stages need not know where a model came from:

* a ``MODEL`` (a ``ModelPatcher`` of a Wan 2.1 / 2.2 model, as UNETLoader, GGUF loaders and LoRA / patch nodes
  make it) samples through ComfyUI's own model execution: per sampling run the model is prepared as ComfyUI's
  samplers do (``prepare_model_patcher`` and ``prepare_sampling``: ``load_models_gpu`` with a memory estimate,
  so ComfyUI may load it partially; ``pre_run`` callbacks; ``cleanup`` after), and every forward is the model's
  ``apply_model`` (through ``model_function_wrapper`` when a patch set one) with the patcher's
  ``transformer_options`` (patches, block replacements, wrappers) plus the ``cond_or_uncond`` / ``uuids`` /
  ``sigmas`` entries ComfyUI's samplers add. ``apply_model`` returns the denoised latent ``x - sigma * v``; the
  engine's flow-matching loop takes the velocity ``v = (x - denoised) / sigma`` back from it. LoRAs applied by
  LoraLoaderModelOnly are ComfyUI weight patches, applied when ComfyUI loads the model;
* a ``VAE`` encodes / decodes video through ``VAE.encode`` / ``VAE.decode`` (ComfyUI places it itself), with
  Wan's latent normalisation (``comfy.latent_formats.Wan21`` / ``Wan22``) on our side, since the engine's
  latents are normalised;
* a ``CLIP`` (UMT5 loaded by CLIPLoader, type wan) encodes each shot prompt with ComfyUI's tokenizer, so prompt
  emphasis such as ``(word:1.2)`` works; the result is cut / zero-padded to Wan's 512 text tokens;
* a ``CLIP_VISION`` gives the penultimate hidden states (what WanImageToVideo passes as ``clip_fea``).

The input objects are never changed: nothing is added to their patches or options, and the audio adapter's
hooks live only inside one forward (see :class:`avatar_cascade.models.audio_adapter.AudioAdapter`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import uuid
from types import SimpleNamespace
from typing import Any

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.models.wan_dit import WanDiT

try:  # pragma: no cover - only inside ComfyUI
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.patcher_extension
    import comfy.sampler_helpers
    import comfy.samplers

    HAS_COMFY = True
except ImportError:
    HAS_COMFY = False

TEXT_TOKENS = 512  # Wan's text length: UMT5 output cut / zero-padded to 512 tokens
_FINGERPRINT_VALUES = 16
_NOT_DRIVEN = ("camera", "camera_2.2", "s2v", "humo", "animate")


def is_native_model(obj: Any) -> bool:
    return HAS_COMFY and isinstance(obj, comfy.model_patcher.ModelPatcher)


# -- fingerprints (cache identities of native objects) ----------------------------------------


def _feed(h, obj: Any, depth: int = 0) -> None:
    """Hash a nested structure of tensors / numbers / strings; tensors by dtype, shape and first values."""
    if depth > 6:
        return
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel() and t.device.type != "meta":
            head = t.flatten()[:_FINGERPRINT_VALUES].cpu()
            h.update(head.view(torch.uint8).numpy().tobytes() if head.element_size() == 1 else head.float().numpy())
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _feed(h, x, depth + 1)
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _feed(h, obj[k], depth + 1)
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        h.update(repr(obj).encode())
    elif hasattr(obj, "weights"):  # comfy.weight_adapter adapters (LoRA, LoHa, ...)
        h.update(type(obj).__name__.encode())
        _feed(h, obj.weights, depth + 1)
    else:
        h.update(type(obj).__qualname__.encode())


def fingerprint(module: torch.nn.Module, *extra: Any) -> str:
    """Id of a native model for cache keys: every tensor's dtype, shape and first values, plus ``extra``
    (the patcher's weight patches and option keys). Cheap (no full pass over the weights)."""
    h = hashlib.sha256()
    for name, t in module.state_dict(keep_vars=True).items():
        h.update(name.encode())
        _feed(h, t)
    for x in extra:
        _feed(h, x)
    return h.hexdigest()


def _patcher_identity(patcher) -> str:
    options = patcher.model_options
    topts = options.get("transformer_options", {})
    keys = {
        "options": sorted(str(k) for k in options if k != "transformer_options"),
        "transformer_options": sorted(str(k) for k in topts),
        "replace": sorted(str(k) for k in topts.get("patches_replace", {}).get("dit", {})),
        "object_patches": sorted(str(k) for k in getattr(patcher, "object_patches", {})),
    }
    return fingerprint(patcher.model.diffusion_model, patcher.patches, json.dumps(keys, sort_keys=True))


# -- MODEL -----------------------------------------------------------------------------------


def _config(model) -> SimpleNamespace:
    """The diffusers-style config fields the engine reads, from ComfyUI's Wan ``unet_config``."""
    uc = dict(model.model_config.unet_config)
    dim, heads = int(uc["dim"]), int(uc.get("num_heads", uc["dim"] // 128))
    image = uc.get("model_type") == "i2v" or "flf_pos_embed_token_number" in uc
    vace = {}
    if uc.get("model_type") == "vace":  # ComfyUI's VaceWanModel: a VACE block after every (layers / count)-th block
        layers, count = int(uc["num_layers"]), int(uc["vace_layers"])
        vace = {"vace_layers": list(range(0, layers, layers // count)), "vace_in_channels": int(uc["vace_in_dim"])}
    return SimpleNamespace(
        **vace,
        in_channels=int(uc["in_dim"]),
        out_channels=int(uc.get("out_dim", 16)),
        num_attention_heads=heads,
        attention_head_dim=dim // heads,
        num_layers=int(uc["num_layers"]),
        ffn_dim=int(uc["ffn_dim"]),
        text_dim=int(uc.get("text_dim", 4096)),
        freq_dim=int(uc.get("freq_dim", 256)),
        patch_size=tuple(uc.get("patch_size", (1, 2, 2))),
        image_dim=1280 if image else None,
        added_kv_proj_dim=dim if image else None,
        pos_embed_seq_len=uc.get("flf_pos_embed_token_number"),
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )


class NativeForward(torch.nn.Module):
    """The DiT the engine's loop calls (``module(hidden_states=..., timestep=..., ...)``), run by ComfyUI.

    It holds no weights of its own (the ComfyUI model is kept outside the module tree). ``compute_dtype``
    float32: ``apply_model`` casts the inputs to the model's dtype itself and returns float32.
    """

    takes_branches = True
    compute_dtype = torch.float32
    audio_hook_points = ("norm3", "cross_attn")  # ComfyUI's Wan block: x + cross_attn(norm3(x), context)

    def __init__(self, patcher) -> None:
        super().__init__()
        object.__setattr__(self, "patcher", patcher)
        self.config = _config(patcher.model)
        self.condition_embedder = SimpleNamespace(image_embedder=None)  # ComfyUI adds FLF2V positions itself
        self.block_dtype = patcher.model_dtype()
        self._run: tuple[Any, dict] | None = None
        self._uuids: dict[str, uuid.UUID] = {}

    @property
    def blocks(self):
        return self.patcher.model.diffusion_model.blocks

    @property
    def vace_blocks(self):
        """A Wan VACE model's control blocks (what marks a VACE DiT); no such attribute on the other models."""
        if not hasattr(self.config, "vace_layers"):
            raise AttributeError("vace_blocks")
        return self.patcher.model.diffusion_model.vace_blocks

    def _vace(self, model, x: torch.Tensor, control: torch.Tensor | None, scale: torch.Tensor | None) -> dict:
        """ComfyUI's VACE conditioning (``vace_context`` ``[B, 1, 96, T, h, w]``, ``vace_strength``) of the engine's
        control context (``[B, 96, T, h, w]``, latents normalised as ComfyUI's ``process_latent_in`` leaves them);
        without one, what ComfyUI's ``WAN21_Vace.extra_conds`` gives a VACE model with no control: zero latents
        (normalised) and mask 1."""
        if not hasattr(self.config, "vace_layers"):
            return {}
        if control is None:
            b, _, t, h, w = x.shape
            zeros = model.process_latent_in(torch.zeros(b, 16, t, h, w, device=x.device, dtype=x.dtype))
            control = torch.cat([zeros, zeros, torch.ones(b, 64, t, h, w, device=x.device, dtype=x.dtype)], dim=1)
        strength = 1.0 if scale is None else float(scale.flatten()[0])
        return {"vace_context": control.float().unsqueeze(1), "vace_strength": [strength]}

    @contextlib.contextmanager
    def session(self, noise_shape: tuple[int, ...]):
        """One sampling run, prepared and cleaned up as ComfyUI's ``CFGGuider`` does."""
        patcher = self.patcher
        options = comfy.model_patcher.create_model_options_clone(patcher.model_options)
        options.setdefault("transformer_options", {})
        comfy.sampler_helpers.prepare_model_patcher(patcher, {}, options)
        model, _, loaded = comfy.sampler_helpers.prepare_sampling(patcher, noise_shape, {}, options)
        cast = getattr(comfy.samplers, "cast_to_load_options", None)
        if cast is not None:
            cast(options, device=patcher.load_device, dtype=patcher.model_dtype())
        self._run = (model, options)
        try:
            patcher.pre_run()
            yield
        finally:
            self._run = None
            patcher.cleanup()
            comfy.sampler_helpers.cleanup_models({}, loaded)
            if cast is not None:
                cast(options, device=patcher.offload_device)
            patcher.restore_hook_patches()

    def _transformer_options(self, model, options: dict, names: tuple[str, ...], sigma: torch.Tensor) -> dict:
        current = getattr(model, "current_patcher", None)
        topts = current.apply_hooks(hooks=None) if current is not None else {}
        topts = comfy.patcher_extension.merge_nested_dicts(topts, options["transformer_options"], copy_dict1=False)
        topts["cond_or_uncond"] = [0 if n == "cond" else 1 for n in names]
        topts["uuids"] = [self._uuids.setdefault(n, uuid.uuid4()) for n in names]
        topts["sigmas"] = sigma
        return topts

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        branches: tuple[str, ...] = ("cond",),
        return_dict: bool = False,
        control_hidden_states: torch.Tensor | None = None,
        control_hidden_states_scale: torch.Tensor | None = None,
    ):
        if self._run is None:
            raise RuntimeError("a native ComfyUI model runs only inside its sampling session (WanDiT.sampling_session)")
        model, options = self._run
        out = self.config.out_channels
        x = hidden_states[:, :out].float()
        sigma = timestep.float().to(x.device) / 1000.0  # Wan's flow model: timestep = 1000 sigma
        c: dict[str, Any] = {"c_crossattn": encoder_hidden_states}
        if hidden_states.shape[1] > out:  # I2V / FLF2V concat channels (a VACE model takes its frames as control)
            c["c_concat"] = hidden_states[:, out:]
        c.update(self._vace(model, x, control_hidden_states, control_hidden_states_scale))
        if encoder_hidden_states_image is not None:
            c["clip_fea"] = encoder_hidden_states_image
        c["transformer_options"] = self._transformer_options(model, options, tuple(branches), sigma)
        cond_or_uncond = c["transformer_options"]["cond_or_uncond"]
        wrapper = options.get("model_function_wrapper")
        if wrapper is not None:
            denoised = wrapper(
                model.apply_model, {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": cond_or_uncond}
            )
        else:
            denoised = model.apply_model(x, sigma, **c)
        return ((x - denoised.float()) / sigma.view(-1, *([1] * (x.ndim - 1))),)


@dataclasses.dataclass
class NativeWanDiT(WanDiT):
    """A ``WanDiT`` handle over a ComfyUI ``MODEL``: the engine samples it, ComfyUI executes it."""

    native = True

    def sampling_session(self, noise_shape: tuple[int, ...]):
        return self.transformer.session(noise_shape)

    def modules(self) -> list[torch.nn.Module]:
        # ComfyUI loads the model in the sampling session; only the audio adapter is the pack's to place
        return list(self.audio_adapter.modules()) if self.audio_adapter is not None else []

    def cache_identity(self) -> str:
        adapter = self.audio_adapter
        payload = [self.identity, None if adapter is None else [adapter.identity, adapter.strength]]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def native_dit(patcher, input_name: str = "dit") -> NativeWanDiT:
    """The engine handle of a ComfyUI ``MODEL`` holding a Wan 2.1 / 2.2 model (clear error otherwise)."""
    from avatar_cascade.models.wan_dit import variant_of_config

    model = patcher.model
    if not isinstance(model, comfy.model_base.WAN21):
        raise InputError(
            input_name,
            type(model).__name__,
            "this MODEL is not a Wan 2.1 / 2.2 model",
            "load a Wan DiT with UNETLoader (or a GGUF loader) and connect that MODEL",
        )
    kind = model.model_config.unet_config.get("model_type", "t2v")
    if kind in _NOT_DRIVEN:
        raise InputError(
            input_name, kind, f"this is a Wan {kind} model, which the cascade does not drive", "use a Wan I2V / FLF2V"
        )
    forward = NativeForward(patcher)
    if kind == "vace":
        from avatar_cascade.models.wan_vace import vace_variant_of_config

        variant = vace_variant_of_config(vars(forward.config))
    else:
        variant = variant_of_config(vars(forward.config))
    return NativeWanDiT(transformer=forward, variant=variant, identity=_patcher_identity(patcher), path=None)
