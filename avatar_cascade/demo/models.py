"""Tiny random-weight demo models in the real on-disk formats, in a ComfyUI ``models/`` tree.

The files have the architectures and key layouts of the real checkpoints (original Wan
layout for the DiT and VAE, ComfyUI's UMT5 file with its SentencePiece model, Hugging
Face wav2vec2 keys, a Qwen2.5-VL folder), so the demo and the tests run the real loaders.
Same seed -> byte-identical files; files already present with the same seed are kept.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = "2"
DIT_FILE = "avatar_cascade_tiny_wan_flf.safetensors"
AUDIO_ADAPTER_FILE = "avatar_cascade_tiny_infinitetalk.safetensors"
VAE_FILE = "avatar_cascade_tiny_wan_vae.safetensors"
TEXT_ENCODER_FILE = "avatar_cascade_tiny_umt5.safetensors"
AUDIO_ENCODER_FILE = "avatar_cascade_tiny_wav2vec2.safetensors"
MLLM_FOLDER = "avatar-cascade-tiny-qwen25-vl"
FLF2V_DIT_FILE = "avatar_cascade_tiny_wan_flf2v.safetensors"
CLIP_VISION_FILE = "avatar_cascade_tiny_clip_vision.safetensors"
# ComfyUI-shaped tiny models (its own loaders hard-code real widths): the native-MODEL workflow and tests
COMFY_DIT_FILE = "avatar_cascade_tiny_wan_comfy.safetensors"
WIDE_TEXT_ENCODER_FILE = "avatar_cascade_tiny_umt5_wide.safetensors"
COMFY_LORA_FILE = "avatar_cascade_tiny_wan_comfy_lora.safetensors"
COMFY_AUDIO_ADAPTER_FILE = "avatar_cascade_tiny_infinitetalk_comfy.safetensors"
OMNI_FOLDER = "avatar-cascade-tiny-qwen25-omni-thinker"
VACE_DIT_FILE = "avatar_cascade_tiny_wan_vace.safetensors"
COMFY_VACE_FILE = "avatar_cascade_tiny_wan_vace_comfy.safetensors"
_TAG_KEY = "avatar_cascade_demo"
_MARKER = ".avatar_cascade_demo"

# A small English corpus for the tiny SentencePiece model (prompts the demo actually uses).
_CORPUS = (
    "A person talks to the camera with a calm, friendly smile.",
    "The woman sings a slow song in a warm room, soft light on her face.",
    "Close-up of a face: the man nods, laughs and keeps talking.",
    "The camera slowly zooms in while she speaks about her day.",
    "He raises one hand, points to the left and explains the plan.",
    "A singer closes her eyes on the long note, then opens them and smiles.",
    "Medium shot, static camera, neutral background, natural skin tones.",
    "Her eyebrows lift in surprise; she leans forward and whispers.",
    "The presenter turns his head, blinks, and answers the question.",
    "Bright studio light, sharp focus, the speaker looks straight ahead.",
    "She shakes her head gently and tilts it to the side while listening.",
    "An old man tells a story, his voice low and his hands moving slowly.",
    "The girl laughs, covers her mouth, then continues the sentence.",
    "Dramatic lighting, the actor frowns and speaks with anger in his eyes.",
    "Blurry, low quality, distorted face, extra fingers, flickering, watermark.",
    "A news anchor reads the evening headlines in a serious tone.",
    "The teacher smiles at the class and writes on the board behind her.",
    "Slow dolly out, the singer raises both arms at the end of the chorus.",
    "Quiet moment: he breathes in, pauses, and looks down before speaking.",
    "Warm sunset colours, hair moving in the wind, lips synced to the words.",
    "Emotion shifts from sadness to joy as the music grows louder.",
    "Cartoon style, big eyes, bold outlines, the character waves hello.",
    "Realistic portrait video, consistent identity, stable background.",
    "The host thanks the audience, bows slightly and steps back.",
)


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tag(role: str, seed: int) -> str:
    return f"{role}:v{FORMAT_VERSION}:seed{seed}"


def _is_current(path: Path, tag: str) -> bool:
    from avatar_cascade.core.errors import ModelFileError
    from avatar_cascade.models.files import read_safetensors_header

    if not path.is_file():
        return False
    try:
        _, metadata = read_safetensors_header(path, "demo")
    except ModelFileError:
        return False
    return metadata.get(_TAG_KEY) == tag


def _save(path: Path, tensors: dict[str, torch.Tensor], tag: str) -> None:
    from safetensors.torch import save_file

    ordered = {k: tensors[k].detach().contiguous().clone() for k in sorted(tensors)}
    _write_atomic(path, lambda tmp: save_file(ordered, str(tmp), metadata={_TAG_KEY: tag}))


def _bundled(name: str) -> dict:
    from avatar_cascade.models.wan_dit import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / name / "config.json").read_text())
    cfg.pop("architectures", None)
    return cfg


def tiny_dit_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny Wan DiT (in 36, out 16, no image embedder) in the ORIGINAL Wan key layout."""
    from diffusers import WanTransformer3DModel

    from avatar_cascade.demo.layouts import dit_to_original_layout as to_original_layout

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WanTransformer3DModel.from_config(_bundled("avatar-cascade-tiny-wan"))
    return to_original_layout(model.state_dict())


def tiny_comfy_dit_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny Wan DiT that ComfyUI's UNETLoader accepts (1 head of 128, freq dim 256, text dim 4096, 2 layers,
    in 36), in ComfyUI's repackaged layout (``model.diffusion_model.`` prefix)."""
    from diffusers import WanTransformer3DModel

    from avatar_cascade.demo.layouts import dit_to_original_layout as to_original_layout

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 11)
        model = WanTransformer3DModel.from_config(_bundled("avatar-cascade-tiny-wan-comfy"))
    return {f"model.diffusion_model.{k}": v for k, v in to_original_layout(model.state_dict()).items()}


def tiny_comfy_lora_state_dict(seed: int = 0, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA for :func:`tiny_comfy_dit_state_dict` in ComfyUI's Wan layout (``diffusion_model.<module>.lora_down /
    lora_up / alpha``) on every attention projection, large enough to change the output visibly."""
    dim, out = 128, {}
    gen = torch.Generator().manual_seed(seed + 12)
    for block in range(2):
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                base = f"diffusion_model.blocks.{block}.{attn}.{proj}"
                out[f"{base}.lora_down.weight"] = torch.randn(rank, dim, generator=gen) * 0.5
                out[f"{base}.lora_up.weight"] = torch.randn(dim, rank, generator=gen) * 0.5
                out[f"{base}.alpha"] = torch.tensor(float(rank))
    return out


def tiny_flf2v_dit_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny FLF2V-layout Wan DiT (in 36, image embedder with FLF position embedding) in the ORIGINAL layout."""
    from diffusers import WanTransformer3DModel

    from avatar_cascade.demo.layouts import dit_to_original_layout as to_original_layout

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 4)
        model = WanTransformer3DModel.from_config(_bundled("avatar-cascade-tiny-wan-flf2v"))
    return to_original_layout(model.state_dict())


def tiny_clip_vision(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny CLIP vision encoder (ComfyUI's transformers key layout) read by the FLF2V DiT's image embedder."""
    from avatar_cascade.demo.tiny_weights import tiny_clip_vision_state_dict

    return tiny_clip_vision_state_dict(seed)


def tiny_vae_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny Wan 2.1-layout VAE (base_dim 8, z_dim 16) in the ORIGINAL Wan VAE key layout."""
    from diffusers import AutoencoderKLWan

    from avatar_cascade.demo.layouts import vae_to_original_layout as to_original_layout

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = AutoencoderKLWan.from_config(_bundled("avatar-cascade-tiny-wan-vae"))
    return to_original_layout(model.state_dict())


def train_tiny_spiece() -> bytes:
    """A deterministic unigram SentencePiece model (T5 ids: pad 0, eos 1, unk 2) trained on the built-in corpus."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 4),
        model_writer=buf,
        vocab_size=320,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        character_coverage=1.0,
        minloglevel=2,
    )
    return buf.getvalue()


def _tiny_umt5(config: str, seed: int) -> dict[str, torch.Tensor]:
    """A tiny UMT5 encoder of a bundled config as ComfyUI stores it: HF T5 keys + the tokenizer (``spiece_model``)."""
    import sentencepiece as spm
    from transformers import UMT5Config, UMT5EncoderModel

    spiece = train_tiny_spiece()
    cfg = _bundled(config)
    cfg["vocab_size"] = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(UMT5Config(**cfg))
    sd = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    return sd


def tiny_umt5_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny UMT5 encoder (d_model 32) in ComfyUI's file layout."""
    return _tiny_umt5("avatar-cascade-tiny-umt5", seed + 2)


def tiny_wide_umt5_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny UMT5 4096 wide (UMT5-XXL's output width, for the ComfyUI-shaped DiT), ComfyUI's file layout."""
    return _tiny_umt5("avatar-cascade-tiny-umt5-wide", seed + 13)


def tiny_wav2vec2_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny wav2vec2 (hidden 32, 2 layers, standard 320x conv stack) in HF ``Wav2Vec2Model`` keys."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        model = Wav2Vec2Model(Wav2Vec2Config(**_bundled("avatar-cascade-tiny-wav2vec2")))
    return dict(model.state_dict())


_FILES = {
    "dit": ("diffusion_models", DIT_FILE, tiny_dit_state_dict),
    "vae": ("vae", VAE_FILE, tiny_vae_state_dict),
    "text_encoder": ("text_encoders", TEXT_ENCODER_FILE, tiny_umt5_state_dict),
    "audio_encoder": ("audio_encoders", AUDIO_ENCODER_FILE, tiny_wav2vec2_state_dict),
    "audio_adapter": ("model_patches", AUDIO_ADAPTER_FILE, lambda seed: tiny_audio_adapter(seed)),
}
# Written only with ``extended=True``: the image-conditioned roles the shipped Wan 2.1 workflows need.
_EXTENDED_FILES = {
    "flf2v_dit": ("diffusion_models", FLF2V_DIT_FILE, tiny_flf2v_dit_state_dict),
    "clip_vision": ("clip_vision", CLIP_VISION_FILE, tiny_clip_vision),
    "comfy_dit": ("diffusion_models", COMFY_DIT_FILE, tiny_comfy_dit_state_dict),
    "wide_text_encoder": ("text_encoders", WIDE_TEXT_ENCODER_FILE, tiny_wide_umt5_state_dict),
    "comfy_lora": ("loras", COMFY_LORA_FILE, tiny_comfy_lora_state_dict),
    "comfy_audio_adapter": ("model_patches", COMFY_AUDIO_ADAPTER_FILE, lambda seed: tiny_comfy_audio_adapter(seed)),
    "vace_dit": ("diffusion_models", VACE_DIT_FILE, lambda seed: _tiny_vace(seed)),
    "comfy_vace_dit": ("diffusion_models", COMFY_VACE_FILE, lambda seed: _tiny_vace(seed, comfy=True)),
}


def _tiny_vace(seed: int = 0, comfy: bool = False) -> dict[str, torch.Tensor]:
    """The tiny Wan VACE DiT (control branch for guided refinement) in the ORIGINAL VACE key layout; ``comfy``: the
    ComfyUI-shaped one (UNETLoader's sizes) in ComfyUI's repackaged layout (``model.diffusion_model.`` prefix)."""
    from avatar_cascade.demo.tiny_vace import TINY_COMFY_VACE_VARIANT, tiny_vace_state_dict

    if not comfy:
        return tiny_vace_state_dict(seed)
    sd = tiny_vace_state_dict(seed + 2, variant=TINY_COMFY_VACE_VARIANT)
    return {f"model.diffusion_model.{k}": v for k, v in sd.items()}


def tiny_audio_adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny InfiniteTalk-layout audio adapter for the tiny DiT (reads the tiny wav2vec2's features)."""
    from avatar_cascade.demo.tiny_weights import tiny_audio_adapter_state_dict

    return tiny_audio_adapter_state_dict(_bundled("avatar-cascade-tiny-wan"), seed)


def tiny_comfy_audio_adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny InfiniteTalk-layout audio adapter for the ComfyUI-shaped tiny DiT."""
    from avatar_cascade.demo.tiny_weights import tiny_audio_adapter_state_dict

    return tiny_audio_adapter_state_dict(_bundled("avatar-cascade-tiny-wan-comfy"), seed)


def _write_mllm(models_dir: Path, seed: int, role: str = "mllm", folder: str = MLLM_FOLDER) -> str | None:
    try:
        from avatar_cascade.demo import tiny_mllm
    except ImportError:
        log.warning("avatar_cascade.demo.tiny_mllm is not available; the tiny MLLM was not written")
        return None
    writer = tiny_mllm.write_tiny_qwen25_vl if role == "mllm" else tiny_mllm.write_tiny_qwen25_omni_thinker
    target = models_dir / "LLM" / folder
    tag = _tag(role, seed)
    marker = target / _MARKER
    if marker.is_file() and marker.read_text() == tag and (target / "config.json").is_file():
        return folder
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=target.parent))
    try:
        writer(tmp, seed=seed)
        (tmp / _MARKER).write_text(tag)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def write_demo_models(models_dir: str | Path, seed: int = 0, extended: bool = False) -> dict[str, str]:
    """Write the tiny demo models into ``models_dir`` (a ComfyUI ``models/`` tree).

    Returns role -> name as ComfyUI lists it in the role's folder: ``dit``
    (diffusion_models/), ``vae`` (vae/), ``text_encoder`` (text_encoders/),
    ``audio_encoder`` (audio_encoders/), ``audio_adapter`` (model_patches/; fits both tiny DiTs)
    and ``mllm`` (LLM/, a Qwen2.5-VL folder; left out when the tiny MLLM writer is unavailable).
    About 5 MB. ``extended`` also writes the roles the shipped Wan 2.1 workflows need:
    ``flf2v_dit`` (diffusion_models/, with the FLF2V image embedder), ``clip_vision``
    (clip_vision/), ``omni`` (LLM/, a Qwen2.5-Omni thinker folder), the ComfyUI-shaped trio of the native
    workflow: ``comfy_dit`` (diffusion_models/, loads in UNETLoader), ``wide_text_encoder`` (text_encoders/,
    4096 wide), ``comfy_lora`` (loras/, for LoraLoaderModelOnly) and ``comfy_audio_adapter`` (model_patches/),
    ``vace_dit`` (diffusion_models/, the tiny Wan VACE) and ``comfy_vace_dit`` (diffusion_models/, a tiny VACE
    that loads in UNETLoader). They are opt-in because
    the CLI picks the only file of a folder when no name is given.
    """
    models_dir = Path(models_dir)
    written: dict[str, str] = {}
    files = {**_FILES, **(_EXTENDED_FILES if extended else {})}
    for role, (folder, name, build) in files.items():
        path = models_dir / folder / name
        tag = _tag(role, seed)
        if _is_current(path, tag):
            log.debug("demo %s is current: %s", role, path)
        else:
            _save(path, build(seed), tag)
            log.info("wrote demo %s: %s", role, path)
        written[role] = name
    mllm = _write_mllm(models_dir, seed)
    if mllm is not None:
        written["mllm"] = mllm
    if extended:
        omni = _write_mllm(models_dir, seed, role="omni", folder=OMNI_FOLDER)
        if omni is not None:
            written["omni"] = omni
    return written
