"""Wan DiT LoRAs as peft adapters on the shared transformer (the ``AVATAR_LORA`` stack).

A stack is an ordered tuple of :class:`LoRASpec` (file, strength, file identity, expert).
:func:`apply_loras` loads each file once as a named adapter into the transformer with
diffusers' ``load_lora_adapter`` and returns a new :class:`WanDiT` handle that records the
stack; :func:`activate_loras` (run at the start of every sampling run) sets the active
adapters and strengths with ``set_adapters``. The base weights are never touched: changing a
strength or swapping a LoRA reloads neither the base model nor an already-loaded LoRA, and an
empty stack disables the adapters (exactly the base model).

Accepted key layouts: ComfyUI / original Wan (``diffusion_model.blocks.0.self_attn.q.lora_A``,
``lora_down``/``lora_up`` + ``alpha``; a ``model.diffusion_model.`` prefix is stripped first),
kohya / musubi-tuner (``lora_unet_blocks_0_self_attn_q.lora_down``) and diffusers / peft
(``transformer.blocks.0.attn1.to_q.lora_A``). Alphas are folded into the matrices by
diffusers' ``WanLoraLoaderMixin.lora_state_dict``, as ``load_lora_weights`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.models.files import check_kind, file_identity, read_safetensors, read_safetensors_header
from avatar_cascade.models.wan_dit import WanDiT

log = logging.getLogger(__name__)

LORA_TARGETS = ("all", "high_noise", "low_noise")
MAX_IDLE_ADAPTERS = 2  # loaded-but-unused adapters kept per transformer (for quick switching back)
_FIX = "choose a LoRA trained for Wan 2.1 / 2.2 (ComfyUI, kohya/musubi or diffusers format)"


@dataclass(frozen=True)
class LoRASpec:
    """One entry of an ``AVATAR_LORA`` stack.

    Attributes:
        path: the LoRA file (inside models/loras).
        strength: multiplier of the LoRA's change (1.0 = as trained; negative values subtract).
        identity: :func:`file_identity` of the file (cache keys, adapter names).
        apply_to: ``"all"``, or for a Wan 2.2 A14B pair ``"high_noise"`` / ``"low_noise"``
            (ignored on single-model DiTs, where every LoRA applies).
    """

    path: Path
    strength: float
    identity: str
    apply_to: str = "all"

    @property
    def adapter_name(self) -> str:
        return f"lora_{self.identity[:16]}"


def lora_spec(path: str | Path, strength: float, apply_to: str = "all", input_name: str = "lora_name") -> LoRASpec:
    """Check a LoRA file (header only) and describe it for a stack."""
    if apply_to not in LORA_TARGETS:
        raise InputError("apply_to", apply_to, "is not a known target", f"choose {', '.join(LORA_TARGETS)}")
    if not isinstance(strength, (int, float)) or not -10.0 <= strength <= 10.0:
        raise InputError("strength", strength, "must be a number between -10 and 10", "use 0.5-1.0")
    path = Path(path)
    shapes, _ = read_safetensors_header(path, input_name)
    check_kind(shapes, "lora", input_name, path)
    return LoRASpec(path=path, strength=float(strength), identity=file_identity(path), apply_to=apply_to)


def stack_loras(previous: Sequence[LoRASpec] | None, spec: LoRASpec) -> tuple[LoRASpec, ...]:
    """``previous`` + ``spec`` (the stack is ordered; the same file twice adds its strengths)."""
    return (*(previous or ()), spec)


# -------------------------------------------------------------- key layouts

_KOHYA_BLOCK = re.compile(r"^blocks_(\d+)_(self_attn|cross_attn)_(q|k|v|o|k_img|v_img)$")
_KOHYA_FFN = re.compile(r"^blocks_(\d+)_ffn_(0|2)$")
_KOHYA_OTHER = {
    "text_embedding_0": "text_embedding.0",
    "text_embedding_2": "text_embedding.2",
    "time_embedding_0": "time_embedding.0",
    "time_embedding_2": "time_embedding.2",
    "time_projection_1": "time_projection.1",
    "head_head": "head.head",
    "img_emb_proj_1": "img_emb.proj.1",
    "img_emb_proj_3": "img_emb.proj.3",
}
_ORIGINAL_MARKERS = (".self_attn.", ".cross_attn.", ".ffn.0.", ".ffn.2.")


def _kohya_to_comfy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kohya/musubi names -> ComfyUI's (``lora_unet_blocks_0_self_attn_q`` -> ``diffusion_model.blocks.0.self_attn.q``).

    Kept instead of diffusers' musubi converter, which needs every block to carry every
    attention and FFN layer with an alpha and refuses embedding / head layers; through the
    ComfyUI layout a LoRA on some layers only, or on the embeddings, loads too.
    """
    out = {}
    for key, value in sd.items():
        module, _, rest = key[len("lora_unet_") :].partition(".")
        if m := _KOHYA_BLOCK.match(module):
            module = f"blocks.{m.group(1)}.{m.group(2)}.{m.group(3)}"
        elif m := _KOHYA_FFN.match(module):
            module = f"blocks.{m.group(1)}.ffn.{m.group(2)}"
        elif module in _KOHYA_OTHER:
            module = _KOHYA_OTHER[module]
        else:
            raise KeyError(key)
        out[f"diffusion_model.{module}.{rest}"] = value
    return out


def to_peft_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported Wan LoRA layout -> peft keys of the diffusers model (``blocks.0.attn1.to_q.lora_A.weight``).

    The key names are first brought to a layout diffusers reads (``model.`` prefix stripped,
    bare original keys prefixed, kohya/musubi names renamed to ComfyUI's), then converted by
    diffusers' public ``WanLoraLoaderMixin.lora_state_dict`` (what ``load_lora_weights`` uses).
    Raises ``KeyError`` / ``ValueError`` for layouts that are not a Wan LoRA.
    """
    from diffusers.loaders import WanLoraLoaderMixin

    if any(k.endswith(".dora_scale") for k in sd):  # dropped before conversion: diffusers' converter refuses them
        log.warning("DoRA magnitudes (dora_scale) are not supported and are left out, as diffusers does")
    sd = {k.replace(".default.", "."): v for k, v in sd.items() if not k.endswith(".dora_scale")}
    if any(k.startswith("model.diffusion_model.") for k in sd):
        sd = {k.removeprefix("model."): v for k, v in sd.items()}
    if any(k.startswith("lora_unet_") for k in sd):
        sd = _kohya_to_comfy(sd)
    elif not any(k.startswith(("diffusion_model.", "transformer.")) for k in sd):
        if any(marker in k for k in sd for marker in _ORIGINAL_MARKERS):
            sd = {f"diffusion_model.{k}": v for k, v in sd.items()}
    if any(k.startswith("diffusion_model.") for k in sd):
        sd = {k: v for k, v in sd.items() if k.startswith("diffusion_model.")}
    sd = WanLoraLoaderMixin.lora_state_dict(sd)
    return {k.removeprefix("transformer."): v for k, v in sd.items()}


def _guess_family(keys: Sequence[str]) -> str:
    """What a LoRA that fits no Wan layer was made for (from its key names)."""
    text = " ".join(keys[:400])
    table = (
        (
            ("lora_te1_", "lora_unet_input_blocks", "lora_unet_down_blocks", "down_blocks.", "input_blocks."),
            "Stable Diffusion (1.x / 2.x / XL)",
        ),
        (("img_attn_qkv", "txt_attn_qkv", "individual_token_refiner"), "HunyuanVideo"),
        (("double_blocks", "single_blocks", "single_transformer_blocks"), "FLUX"),
        (("joint_blocks",), "Stable Diffusion 3"),
        (("img_mlp", "txt_mlp"), "Qwen-Image"),
        (("vace_blocks",), "the Wan VACE module"),
        (("audio_proj", "audio_cross_attn"), "a Wan audio adapter (MultiTalk / InfiniteTalk)"),
        (("transformer_blocks",), "another video/image DiT (LTX-Video, CogVideoX, PixArt...)"),
    )
    for markers, family in table:
        if any(m in text for m in markers):
            return family
    return "an unknown model"


def _module_weight(modules: dict[str, torch.nn.Module], name: str) -> torch.Tensor | None:
    module = modules.get(name)
    if module is None:
        return None
    module = getattr(module, "base_layer", module)
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) and weight.ndim == 2 else None


def read_wan_lora(path: Path, transformer: torch.nn.Module, input_name: str = "lora") -> dict[str, torch.Tensor]:
    """Read a LoRA file and return the peft state dict that fits ``transformer`` (cast to its dtype).

    Keys for layers the model lacks (e.g. image cross-attention of an I2V LoRA on a T2V model)
    are dropped with a warning; a LoRA that fits no layer, or has the wrong width, is refused.
    """
    raw, _ = read_safetensors(path, input_name)
    try:
        sd = to_peft_layout(dict(raw))
    except (KeyError, ValueError, IndexError) as err:
        log.debug("LoRA conversion of %s failed: %r", path, err)
        sd = {}
    modules = dict(transformer.named_modules())
    keep: dict[str, torch.Tensor] = {}
    dropped: set[str] = set()
    for key, value in sd.items():
        name, sep, _ = key.partition(".lora_")
        weight = _module_weight(modules, name) if sep else None
        if weight is None:
            dropped.add(name)
            continue
        out_f, in_f = weight.shape
        if (".lora_A." in key and value.shape[-1] != in_f) or (".lora_B." in key and value.shape[0] != out_f):
            raise ModelFileError(
                input_name,
                path,
                f"this LoRA was made for a Wan DiT of another size: '{name}' has {tuple(value.shape)} LoRA weights "
                f"for a {out_f}x{in_f} layer (1.3B models are 1536 wide, 5B 3072, 14B 5120)",
                "choose the LoRA made for this model size",
            )
        keep[key] = value.to(_lora_dtype(transformer, weight))
    if not keep:
        raise ModelFileError(
            input_name,
            path,
            f"this LoRA is for {_guess_family(list(raw))}, not a Wan DiT: none of its {len(raw)} weights fit a layer",
            _FIX,
        )
    if dropped:
        log.warning(
            "%s: %d LoRA layers do not exist in this DiT and are skipped (e.g. %s)",
            path.name,
            len(dropped),
            sorted(dropped)[0],
        )
    return keep


# -------------------------------------------------------------- adapters


def _loaded(transformer: torch.nn.Module) -> set[str]:
    return set(getattr(transformer, "peft_config", {}) or {})


def _load_adapter(transformer: torch.nn.Module, spec: LoRASpec, input_name: str) -> None:
    from avatar_cascade.models.offload import reapply_offload

    sd = read_wan_lora(spec.path, transformer, input_name)
    with warnings.catch_warnings():  # peft warns that a second adapter is being added: that is the design
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        transformer.load_lora_adapter(sd, prefix=None, adapter_name=spec.adapter_name)
    _lora_weights_out_of_fp8(transformer, sd, spec.adapter_name)
    reapply_offload(transformer)
    log.info("LoRA %s loaded as adapter %s (%d tensors)", spec.path.name, spec.adapter_name, len(sd))


def _lora_dtype(transformer: torch.nn.Module, weight: torch.Tensor) -> torch.dtype:
    """The dtype a LoRA tensor is loaded in: its layer's, or the compute dtype where the layer keeps fp8 weights
    (models.cast: an fp8 LoRA would be rounded and could not compute)."""
    from avatar_cascade.models.cast import is_fp8

    return (getattr(transformer, "compute_dtype", None) or torch.bfloat16) if is_fp8(weight) else weight.dtype


def _lora_weights_out_of_fp8(transformer: torch.nn.Module, sd: dict[str, torch.Tensor], adapter: str) -> None:
    """peft makes LoRA layers in their base layer's dtype: on an fp8-kept DiT they come up fp8; they take the
    (compute-dtype) values of ``sd`` again."""
    from avatar_cascade.models.cast import is_fp8

    params = dict(transformer.named_parameters())
    for key, value in sd.items():
        for part in (".lora_A.", ".lora_B."):
            name = key.replace(part, f"{part}{adapter}.") if part in key else None
            if name in params and is_fp8(params[name]):
                params[name].data = value.to(params[name].device)


def _specs_for(dit: WanDiT, expert: str) -> list[LoRASpec]:
    return [s for s in dit.loras if expert == "all" or s.apply_to in ("all", expert)]


def apply_loras(dit: WanDiT, stack: Sequence[LoRASpec] | None, input_name: str = "lora") -> WanDiT:
    """A handle of ``dit`` with ``stack`` as its LoRAs; files not yet loaded are loaded (and checked) now.

    The base model is shared, not copied; the new stack is also activated right away.
    """
    stack = tuple(stack or ())
    for spec in stack:
        if not isinstance(spec, LoRASpec):
            raise InputError(input_name, type(spec).__name__, "is not a LoRA stack entry", "connect a LoRA Stack node")
    from avatar_cascade.models.offload import base_module

    new = dataclasses.replace(dit, loras=stack)
    for expert, module in new.experts():
        module = base_module(module)
        for spec in _specs_for(new, expert):
            if spec.adapter_name not in _loaded(module):
                _load_adapter(module, spec, input_name)
    activate_loras(new)
    return new


def activate_loras(dit: WanDiT) -> None:
    """Set the adapters and strengths of ``dit.loras`` on its transformer(s) (loading any missing file).

    An empty stack disables all adapters, which gives exactly the base model's output.
    """
    from avatar_cascade.models.offload import base_module

    for expert, module in dit.experts():
        module = base_module(module)
        weights: dict[str, float] = {}
        for spec in _specs_for(dit, expert):
            if spec.adapter_name not in _loaded(module):
                _load_adapter(module, spec, "lora")
            weights[spec.adapter_name] = weights.get(spec.adapter_name, 0.0) + spec.strength
        weights = {k: v for k, v in weights.items() if v != 0.0}
        if not _loaded(module):
            continue
        if weights:
            module.set_adapters(list(weights), list(weights.values()))
            module.enable_adapters()
        else:
            module.disable_adapters()
        _evict_idle(module, set(weights))


def _evict_idle(module: torch.nn.Module, active: set[str]) -> None:
    """Keep at most ``MAX_IDLE_ADAPTERS`` unused adapters, dropping the least recently used."""
    tick = getattr(module, "_avatar_lora_tick", 0) + 1
    module._avatar_lora_tick = tick
    last_used: dict[str, int] = getattr(module, "_avatar_lora_last_used", {})
    last_used.update({name: tick for name in active})
    idle = sorted((n for n in _loaded(module) if n not in active), key=lambda n: last_used.get(n, 0))
    drop = idle[: max(0, len(idle) - MAX_IDLE_ADAPTERS)]
    if drop:
        module.delete_adapters(drop)  # re-applies group offloading itself
        log.info("unloaded idle LoRA adapters %s", ", ".join(drop))
    module._avatar_lora_last_used = {n: t for n, t in last_used.items() if n not in drop}


def describe_stack(stack: Sequence[LoRASpec]) -> str:
    """One line per LoRA, for logs and node text."""
    return "; ".join(f"{s.path.name} x{s.strength:g} ({s.apply_to})" for s in stack) or "no LoRA"
