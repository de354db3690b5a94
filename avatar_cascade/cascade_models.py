"""The generation models of a command-line run: the DiT (+ LoRAs, + audio adapter), VAE, text encoder, CLIP vision,
the optional VACE refiner DiT, and the names of the extra model files (for :mod:`avatar_cascade.cascade`)."""

from __future__ import annotations

from avatar_cascade.core.errors import InputError
from avatar_cascade.models.handle import WanModels


def extra_model_paths(cfg) -> dict:
    """Resolve the audio adapter, LoRA, upscale- and interpolator-model names (inside their model folders only)."""
    from avatar_cascade.models.files import resolve_model_path
    from avatar_cascade.models.rife import resolve_rife_model
    from avatar_cascade.models.upscale import resolve_upscale_model

    out: dict = {"audio_adapter": None, "loras": [], "upscale_model": None, "interpolator_model": None}
    out["refiner_dit"] = None
    if cfg.refiner_dit:
        roots = [cfg.models_dir / "diffusion_models"]
        out["refiner_dit"] = resolve_model_path(roots, cfg.refiner_dit, input_name="--refiner-dit")
    if cfg.upscale_model:
        out["upscale_model"] = resolve_upscale_model(cfg.models_dir, cfg.upscale_model, input_name="--upscale-model")
    rife = cfg.stitcher.interpolation == "rife" and cfg.stitcher.interpolate > 1
    if rife and not cfg.interpolator_model:
        raise InputError(
            "--interpolator-model", "none", "--interpolation rife needs RIFE weights",
            "add --interpolator-model NAME (a file in models/frame_interpolation), or use --interpolation flow",
        )  # fmt: skip
    if cfg.interpolator_model:
        out["interpolator_model"] = resolve_rife_model(cfg.models_dir, cfg.interpolator_model)
    if cfg.audio_adapter:
        roots = [cfg.models_dir / "model_patches", cfg.models_dir / "diffusion_models"]
        out["audio_adapter"] = resolve_model_path(roots, cfg.audio_adapter, input_name="--audio-adapter")
    for name, strength in cfg.loras:
        out["loras"].append((resolve_model_path([cfg.models_dir / "loras"], name, input_name="--lora"), strength))
    return out


def load_generators(cfg, paths: dict, extra: dict, aligned) -> WanModels:
    """DiT (+ LoRAs, + audio adapter), VAE, text encoder and optional CLIP vision."""
    from avatar_cascade.models.clip_vision import load_clip_vision
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae

    dit = load_wan_dit(paths["dit"], input_name="--dit")
    if extra["loras"]:
        from avatar_cascade.models.lora import apply_loras, lora_spec, stack_loras

        stack = None
        for path, strength in extra["loras"]:
            stack = stack_loras(stack, lora_spec(path, strength, input_name="--lora"))
        dit = apply_loras(dit, stack, input_name="--lora")
    if extra["audio_adapter"] is not None:
        from avatar_cascade.models.audio_adapter import load_audio_adapter

        if aligned.features is None:
            raise InputError(
                "--audio-encoder",
                None,
                "the audio adapter needs audio features",
                "name a wav2vec2 file with --audio-encoder (chinese-wav2vec2-base for InfiniteTalk)",
            )
        dit = load_audio_adapter(extra["audio_adapter"], dit, input_name="--audio-adapter").attach(dit)
    vae = load_wan_vae(paths["vae"], input_name="--vae")
    te = load_text_encoder(paths["text_encoder"], input_name="--text-encoder")
    clip_vision = load_clip_vision(paths["clip_vision"], input_name="--clip-vision") if paths["clip_vision"] else None
    return WanModels(dit, vae, te, clip_vision)


def refiner_models(models: WanModels, extra: dict) -> WanModels | None:
    """``--refiner-dit`` (a Wan VACE DiT for guided refinement, with the run's audio adapter) in ``models``."""
    from dataclasses import replace

    from avatar_cascade.models.wan_dit import load_wan_dit

    if extra["refiner_dit"] is None:
        return None
    dit = load_wan_dit(extra["refiner_dit"], input_name="--refiner-dit")
    if extra["audio_adapter"] is not None:
        from avatar_cascade.models.audio_adapter import load_audio_adapter

        dit = load_audio_adapter(extra["audio_adapter"], dit, input_name="--audio-adapter").attach(dit)
    return replace(models, dit=dit)
