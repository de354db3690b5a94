"""Checks of the native-model path inside a real ComfyUI process (run by tests/test_comfyui_native.py).

    python tests/comfy_native_checks.py COMFYUI_DIR PACK_DIR WORK_DIR   (cwd: COMFYUI_DIR)

Writes ``WORK_DIR/results.json``: check name -> ``{"ok": bool, ...figures}`` or ``{"error": traceback}``. Every
model is real and tiny: the ComfyUI-shaped demo DiT loaded by ComfyUI's own ``load_diffusion_model`` (what
UNETLoader calls) and by the pack's loader, a LoRA through ComfyUI's ``load_lora_for_models`` (what
LoraLoaderModelOnly calls) and through the pack's LoRA code, and ComfyUI's VAE / UMT5 / CLIP-vision classes at
the demo sizes (tests/comfy_tiny_native.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
from pathlib import Path

COMFY, PACK, WORK = (Path(a) for a in sys.argv[1:4])
PACKAGE = "avatar_cascade_pack"
sys.argv = [sys.argv[0], "--cpu"]
sys.path[:0] = [str(COMFY), str(PACK), str(PACK / "tests")]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.model_management  # noqa: E402,F401
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402
import torch  # noqa: E402

from avatar_cascade.core.runtime import Runtime  # noqa: E402
from avatar_cascade.demo.models import write_demo_models  # noqa: E402
from avatar_cascade.sampling.conditioning import ClipRequest, encode_condition  # noqa: E402
from avatar_cascade.sampling.loop import sample_clips  # noqa: E402
from avatar_cascade.sampling.settings import SamplerSettings  # noqa: E402

# the pack as ComfyUI imports it: a package (its nodes/ relative imports), under a name of its own
_spec = importlib.util.spec_from_file_location(PACKAGE, PACK / "__init__.py", submodule_search_locations=[str(PACK)])
pack = importlib.util.module_from_spec(_spec)
sys.modules[PACKAGE] = pack
_spec.loader.exec_module(pack)
native = importlib.import_module(f"{PACKAGE}.nodes.comfy_native")
native_models = importlib.import_module(f"{PACKAGE}.nodes.native_models")
tiny = importlib.import_module("comfy_tiny_native")

MODELS = WORK / "models"
NAMES = write_demo_models(MODELS, extended=True)
RT = Runtime(device=torch.device("cpu"), show_progress=False)


def model_file(role: str, folder: str) -> Path:
    return MODELS / folder / NAMES[role]


def ours():
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae

    dit = load_wan_dit(model_file("comfy_dit", "diffusion_models"))
    te = load_text_encoder(model_file("wide_text_encoder", "text_encoders"))
    return dit, load_wan_vae(model_file("vae", "vae")), te


def requests(te, audio=None):
    emb = te.encode(["A person talks to the camera with a calm, friendly smile.", ""])
    g = torch.Generator().manual_seed(0)
    first, last = (torch.rand(3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    return [ClipRequest(9, {0: first, 8: last}, emb[0], emb[1], seed=5, audio=audio)]


def sample(dit, vae, reqs, guidance=5.0):
    cond = encode_condition(vae, reqs, 32, 32)
    return sample_clips(dit, cond, reqs, SamplerSettings(steps=3, guidance=guidance, shift=3.0), RT)


def snapshot(patcher) -> dict:
    """What must not change on an input MODEL: its patches, options, weights and the hooks on its modules."""
    dm = patcher.model.diffusion_model
    return {
        "patches": {k: len(v) for k, v in patcher.patches.items()},
        "options": repr(patcher.model_options),
        "weights": {k: v.detach().clone() for k, v in dm.state_dict().items()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in dm.modules()),
    }


def same_snapshot(a: dict, b: dict) -> bool:
    same_w = a["weights"].keys() == b["weights"].keys() and all(
        torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"]
    )
    return same_w and all(a[k] == b[k] for k in ("patches", "options", "hooks"))


def check_dit_parity() -> dict:
    dit, vae, te = ours()
    patcher = comfy.sd.load_diffusion_model(str(model_file("comfy_dit", "diffusion_models")))
    nat = native.native_dit(patcher)
    reqs = requests(te)
    out = {}
    for g in (1.0, 5.0):
        a, b = sample(dit, vae, reqs, g), sample(nat, vae, reqs, g)
        out[f"max_diff_cfg{g:g}"] = float((a - b).abs().max())
        out[f"scale_cfg{g:g}"] = float(a.abs().max())
    out["variant"] = nat.variant
    out["ok"] = max(out["max_diff_cfg1"], out["max_diff_cfg5"]) < 1e-4 and nat.variant == dit.variant
    return out


def check_lora() -> dict:
    from avatar_cascade.models.lora import apply_loras, lora_spec, stack_loras

    dit, vae, te = ours()
    lora_path = model_file("comfy_lora", "loras")
    lora_sd = comfy.utils.load_torch_file(str(lora_path), safe_load=True)
    base = comfy.sd.load_diffusion_model(str(model_file("comfy_dit", "diffusion_models")))
    before = snapshot(base)
    patched = comfy.sd.load_lora_for_models(base, None, lora_sd, 1.0, 0)[0]  # LoraLoaderModelOnly
    zero = comfy.sd.load_lora_for_models(base, None, lora_sd, 0.0, 0)[0]
    reqs = requests(te)
    plain = sample(native.native_dit(base), vae, reqs)
    with_lora = sample(native.native_dit(patched), vae, reqs)
    at_zero = sample(native.native_dit(zero), vae, reqs)
    ours_lora = sample(apply_loras(dit, stack_loras(None, lora_spec(lora_path, 1.0))), vae, reqs)
    out = {
        "lora_effect": float((with_lora - plain).abs().max()),
        "strength0_diff": float((at_zero - plain).abs().max()),
        "vs_pack_lora": float((with_lora - ours_lora).abs().max()),
        "identity_differs": native.native_dit(patched).cache_identity() != native.native_dit(base).cache_identity(),
        "input_unchanged": same_snapshot(before, snapshot(base)),
    }
    out["ok"] = (
        out["lora_effect"] > 1e-2
        and out["strength0_diff"] < 1e-5
        and out["vs_pack_lora"] < 1e-3
        and out["identity_differs"]
        and out["input_unchanged"]
    )
    return out


def check_patches_and_wrappers() -> dict:
    """A unet function wrapper and a block-replace patch on a clone both run inside the cascade's sampling."""
    _, vae, te = ours()
    base = comfy.sd.load_diffusion_model(str(model_file("comfy_dit", "diffusion_models")))
    before = snapshot(base)
    calls = {"wrapper": 0, "block": 0, "sigmas": None}

    def wrapper(apply_model, args):
        calls["wrapper"] += 1
        calls["sigmas"] = float(args["c"]["transformer_options"]["sigmas"].max())
        return apply_model(args["input"], args["timestep"], **args["c"])

    def block(args, extra):
        calls["block"] += 1
        return extra["original_block"](args)

    patched = base.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    patched.set_model_patch_replace(block, "dit", "double_block", 1)
    reqs = requests(te)
    plain, through = sample(native.native_dit(base), vae, reqs), sample(native.native_dit(patched), vae, reqs)
    out = {**calls, "diff": float((plain - through).abs().max())}
    out["input_unchanged"] = same_snapshot(before, snapshot(base))
    out["ok"] = calls["wrapper"] == 3 and calls["block"] == 3 and out["diff"] < 1e-6 and out["input_unchanged"]
    return out


def check_audio_adapter() -> dict:
    from avatar_cascade.demo.tiny_weights import TINY_FEATURES, write_tiny_audio_adapter
    from avatar_cascade.models.audio_adapter import load_audio_adapter
    from avatar_cascade.models.wan_dit import load_bundled_config

    dit, vae, te = ours()
    path = write_tiny_audio_adapter(WORK / "adapter.safetensors", load_bundled_config("avatar-cascade-tiny-wan-comfy"))
    patcher = comfy.sd.load_diffusion_model(str(model_file("comfy_dit", "diffusion_models")))
    before = snapshot(patcher)
    nat = native.native_dit(patcher)
    ours_a = load_audio_adapter(path, dit).attach(dit)
    nat_a = load_audio_adapter(path, nat).attach(nat)
    audio = torch.randn(9, 5, *TINY_FEATURES, generator=torch.Generator().manual_seed(3))
    reqs = requests(te, audio=audio)
    a, b = sample(ours_a, vae, reqs), sample(nat_a, vae, reqs)
    silent = sample(nat, vae, requests(te))
    out = {
        "max_diff": float((a - b).abs().max()),
        "audio_effect": float((b - silent).abs().max()),
        "input_unchanged": same_snapshot(before, snapshot(patcher)),
    }
    out["ok"] = out["max_diff"] < 1e-4 and out["audio_effect"] > 1e-3 and out["input_unchanged"]
    return out


def check_vae() -> dict:
    from avatar_cascade.models.wan_vae import load_wan_vae

    path = model_file("vae", "vae")
    ours_vae = load_wan_vae(path)
    nat = native_models.engine_model(tiny.tiny_native_vae(comfy.utils.load_torch_file(str(path))), "vae")
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    za, zb = ours_vae.encode(video), nat.encode(video)
    da, db = ours_vae.decode(za), nat.decode(za)
    out = {"encode_diff": float((za - zb).abs().max()), "decode_diff": float((da - db).abs().max())}
    out["ok"] = out["encode_diff"] < 1e-3 and out["decode_diff"] < 1e-3 and tuple(db.shape) == tuple(da.shape)
    return out


def check_clip() -> dict:
    from avatar_cascade.models.text_encoder import load_text_encoder

    path = model_file("wide_text_encoder", "text_encoders")
    ours_te = load_text_encoder(path)
    nat = native_models.engine_model(tiny.tiny_native_clip(comfy.utils.load_torch_file(str(path))), "text_encoder")
    prompts = ["A person talks to the camera with a calm, friendly smile.", "The woman sings a slow song."]
    a, b = ours_te.encode(prompts), nat.encode(prompts)
    plain = nat.encode(["The woman sings a slow song."])
    weighted = nat.encode(["The woman (sings:1.5) a slow song."])
    out = {
        "max_diff": float((a - b).abs().max()),
        "scale": float(a.abs().max()),
        "shape": list(b.shape),
        "emphasis_effect": float((weighted - plain).abs().max()),
    }
    out["ok"] = out["max_diff"] < 1e-3 * max(1.0, out["scale"]) and out["emphasis_effect"] > 1e-4
    return out


def check_clip_vision() -> dict:
    from avatar_cascade.models.clip_vision import load_clip_vision

    path = model_file("clip_vision", "clip_vision")
    ours_cv = load_clip_vision(path)
    comfy_cv = tiny.tiny_native_clip_vision(comfy.utils.load_torch_file(str(path)))
    nat = native_models.engine_model(comfy_cv, "clip_vision")
    images = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(2))
    a, b = ours_cv.encode(images), nat.encode(images)
    out = {"max_diff": float((a - b).abs().max()), "scale": float(a.abs().max()), "shape": list(b.shape)}
    out["ok"] = out["max_diff"] < 1e-3 * max(1.0, out["scale"]) and list(a.shape) == list(b.shape)
    return out


def check_partial_load_of_the_packs_model() -> dict:
    """ComfyUI's own partial (low-VRAM) load of a pack-loaded DiT: some layers stay offloaded, and it computes
    what the fully loaded DiT computes."""
    bridge = importlib.import_module(f"{PACKAGE}.nodes.comfy_bridge")
    from avatar_cascade.models.offload import make_streamable

    dit, vae, te = ours()
    reqs = requests(te)
    reference = sample(dit, vae, reqs)
    prepared = make_streamable(dit.transformer)
    patcher = bridge.patcher_for(dit.transformer)
    budget = patcher.model_size() // 3
    patcher.load(torch.device("cpu"), lowvram_model_memory=budget)  # what load_models_gpu does when VRAM is short
    offloaded = [m for m in dit.transformer.modules() if getattr(m, "comfy_cast_weights", False)]
    out = sample(dit, vae, reqs)
    res = {
        "prepared": prepared,
        "offloaded_layers": len(offloaded),
        "model_lowvram": bool(getattr(patcher.model, "model_lowvram", False)),
        "max_diff": float((out - reference).abs().max()),
    }
    res["ok"] = res["model_lowvram"] and res["offloaded_layers"] > 0 and res["max_diff"] == 0.0
    return res


def node_inputs() -> dict:
    """The refiner node's inputs for two drawn keys (the sample portrait and its mirror), 32x32, 9 frames."""
    from avatar_cascade.media import sample_image_path
    from avatar_cascade.media.image import load_image
    from avatar_cascade.stages.inbetween.inbetween import keyframes_from_images
    from avatar_cascade.stages.inbetween.settings import InbetweenSettings

    ref = load_image(sample_image_path())
    keys = torch.stack([ref, ref.flip(1)])
    kf, aligned, story = keyframes_from_images(keys, InbetweenSettings(width=32, height=32, fps=16, segment_frames=9))
    return dict(keyframes=kf, timeline=aligned, storyline=story, reroll="", steps=2, seed=3, batch_size=1)


def check_vace_nodes_with_a_native_vace_model() -> dict:
    """The Guided Refiner (control + VACE reference) and the Blueprint Sampler (control) on UNETLoader's VACE MODEL
    render the frames of the pack's VACE loader on the same file."""
    import folder_paths

    from avatar_cascade.artefacts.control import ControlVideo
    from avatar_cascade.media import sample_image_path
    from avatar_cascade.media.image import load_image
    from avatar_cascade.models.wan_dit import load_wan_dit

    folder_paths.set_output_directory(str(WORK / "output"))
    refiner = importlib.import_module(f"{PACKAGE}.nodes.control").AvatarCascadeGuidedRefiner
    sampler = importlib.import_module(f"{PACKAGE}.nodes.blueprint").AvatarCascadeBlueprintSampler
    path, (_, vae, te) = model_file("comfy_vace_dit", "diffusion_models"), ours()
    kw = node_inputs()
    frames = kw["timeline"].timeline.padded_frames
    g = torch.Generator().manual_seed(4)
    control = ControlVideo(torch.randint(0, 256, (frames, 32, 32, 3), generator=g).byte())
    image = load_image(sample_image_path())[None]
    bp = dict(width=32, height=32, framing="bucket", blueprint_fps=4.0, window_frames=9, lead_frames=4,
              prompt_mode="majority", seed=0, steps=2, guidance=1.0, shift=3.0, batch_size=1)  # fmt: skip
    runs = {}
    for name, dit in (("native", comfy.sd.load_diffusion_model(str(path))), ("pack", load_wan_dit(path))):
        clips = refiner().refine(dit, vae, te, cache_folder=f"vace_{name}", control=control, vace_reference=image,
                                 **kw)["result"][0]  # fmt: skip
        (blue,) = sampler().render(dit, vae, te, image, kw["timeline"], kw["storyline"], f"vace_bp_{name}",
                                   control=control, **bp)["result"]  # fmt: skip
        blueprint = torch.stack([blue.frame(i) for i in range(len(blue))])
        runs[name] = (torch.cat(list(clips.iter_frames())).float(), blueprint)
    out = {"frames": int(runs["native"][0].shape[0]), "blueprint_frames": int(runs["native"][1].shape[0])}
    out["refiner_max_diff_u8"] = float((runs["native"][0] - runs["pack"][0]).abs().max())
    out["blueprint_max_diff_u8"] = float((runs["native"][1].float() - runs["pack"][1].float()).abs().max())
    out["ok"] = out["frames"] > 0 and out["blueprint_frames"] > 0
    out["ok"] = out["ok"] and out["refiner_max_diff_u8"] <= 2 and out["blueprint_max_diff_u8"] <= 2
    return out


def check_refiner_node_with_lora_model() -> dict:
    """The refiner node driven by a LoraLoaderModelOnly MODEL; the input MODEL is unchanged afterwards."""
    import folder_paths

    folder_paths.set_output_directory(str(WORK / "output"))
    refiner_node = importlib.import_module(f"{PACKAGE}.nodes.refiner").AvatarCascadeFLFRefiner
    _, vae, te = ours()
    base = comfy.sd.load_diffusion_model(str(model_file("comfy_dit", "diffusion_models")))
    lora_sd = comfy.utils.load_torch_file(str(model_file("comfy_lora", "loras")), safe_load=True)
    patched = comfy.sd.load_lora_for_models(base, None, lora_sd, 1.0, 0)[0]
    before_base, before_patched = snapshot(base), snapshot(patched)
    kwargs = node_inputs()
    result = refiner_node().refine(patched, vae, te, cache_folder="native_lora", **kwargs)
    clips = result["result"][0]
    frames = torch.cat([f for f in clips.iter_frames()])
    again = refiner_node().refine(base, vae, te, cache_folder="native_base", **kwargs)["result"][0]
    out = {
        "clips": len(clips.records),
        "frames": int(frames.shape[0]),
        "differs_from_base": float((frames.float() - torch.cat(list(again.iter_frames())).float()).abs().max()),
        "base_unchanged": same_snapshot(before_base, snapshot(base)),
        "patched_unchanged": same_snapshot(before_patched, snapshot(patched)),
    }
    out["ok"] = out["clips"] == 1 and out["differs_from_base"] > 0
    out["ok"] = out["ok"] and out["base_unchanged"] and out["patched_unchanged"]
    return out


def check_vace() -> dict:
    """A Wan VACE MODEL (UNETLoader's load of the ComfyUI-shaped tiny VACE) under a control video gives the
    latents of the pack's VACE loader on the same file, the control changes them, and the MODEL is unchanged."""
    import contextlib

    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.stages.refiner.control import VaceRequest, guidance_for

    path = model_file("comfy_vace_dit", "diffusion_models")
    dit, (_, vae, te) = load_wan_dit(path), ours()
    patcher = comfy.sd.load_diffusion_model(str(path))
    before = snapshot(patcher)
    nat = native.native_dit(patcher)
    (base,) = requests(te)
    g = torch.Generator().manual_seed(3)
    control = torch.rand(3, 9, 32, 32, generator=g) * 2 - 1
    guided = VaceRequest(**vars(base), control=control, control_masks=torch.ones(9, 32, 32), strength=1.0)
    grey = VaceRequest(**vars(base), control=torch.zeros(3, 9, 32, 32), control_masks=torch.ones(9, 32, 32))

    def run(model, req):
        with guidance_for(model, vae, [req]) or contextlib.nullcontext():
            return sample(model, vae, [req])

    a, b = run(dit, guided), run(nat, guided)
    out = {"variant": nat.variant, "is_vace": hasattr(nat.transformer, "vace_blocks")}
    out["max_diff"] = float((a - b).abs().max())
    out["scale"] = float(a.abs().max())
    out["control_changes_output"] = float((b - run(nat, grey)).abs().max())
    out["input_model_unchanged"] = same_snapshot(before, snapshot(patcher))
    out["ok"] = out["max_diff"] < 1e-4 and out["control_changes_output"] > 1e-3 and out["input_model_unchanged"]
    out["ok"] = out["ok"] and nat.variant == dit.variant and out["is_vace"]
    return out


def main() -> None:
    results = {}
    for name, fn in list(globals().items()):
        if name.startswith("check_"):
            try:
                results[name[6:]] = fn()
            except Exception:  # recorded per check, so one failure does not hide the others
                results[name[6:]] = {"ok": False, "error": traceback.format_exc()[-3000:]}
            print(name, json.dumps({k: v for k, v in results[name[6:]].items() if k != "error"}), flush=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
