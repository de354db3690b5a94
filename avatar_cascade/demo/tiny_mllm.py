"""Tiny Qwen multimodal LLMs with random weights, written in the real Hugging Face layouts.

For tests, benchmarks and the demo: each folder holds ``config.json``,
``generation_config.json``, ``model.safetensors``, a byte-level BPE
``tokenizer.json`` trained here in-process (with the Qwen special tokens and chat
template) and the processor config, so :func:`avatar_cascade.models.mllm.load_mllm` loads
it exactly like a downloaded model. Replies are gibberish by design. Well under
1 MB each; same seed, same bytes.

* :func:`write_tiny_qwen25_vl` - Qwen2.5-VL (image + text)
* :func:`write_tiny_qwen3_vl` - Qwen3-VL (image + text)
* :func:`write_tiny_qwen25_omni` - a full Qwen2.5-Omni folder (thinker + stand-in talker
  and vocoder tensors under their prefixes)
* :func:`write_tiny_qwen25_omni_thinker` - a thinker-only Qwen2.5-Omni folder
  (image + audio + text); its processor has a 16 kHz Whisper feature extractor
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL / Qwen2.5-VL's own chat template.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# text model: 32 hidden / 2 heads = head_dim 16; mrope_section must sum to head_dim / 2
_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
_VISION = {
    "depth": 2,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_heads": 2,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 56,
    "out_hidden_size": 32,
    "fullatt_block_indexes": [1],
}
_PIXELS = 56 * 56  # every image becomes 4x4 patches of 14 px = 4 image tokens
# Qwen2.5-Omni's own chat template (images, audio and videos as bos/placeholder/eos).
OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
OMNI_TOKENS = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

_CORPUS = [
    '{"character": "a young woman with short dark hair", "scene": "a bright studio", "style": "photorealistic"}',
    '{"shots": [{"index": 0, "emotion": "happy", "expression": "smiling", "action": "nodding", '
    '"camera": "medium close-up", "prompt": "she smiles and talks", "negative_prompt": "blurry"}]}',
    "The person in the image speaks to the camera with a calm voice, then laughs and looks left.",
    "You are the director of an avatar video. Reply with JSON only. Emotional arc: calm, building, excited.",
    "expression, gesture, camera, pause, loud, quiet, seconds, shot, storyline, mouth closed, eyebrows raised",
]


def _train_tokenizer(vocab_size: int = 1024):
    """Byte-level BPE on a small corpus plus the Director's own prompts (so prompts stay short)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    prompts = sorted((Path(__file__).resolve().parents[1] / "stages" / "director" / "prompts").glob("*.txt"))
    corpus = _CORPUS + [p.read_text(encoding="utf-8") for p in prompts]
    tok.train_from_iterator(corpus * 4, trainer)
    return tok


def _chat_tokenizer():
    """The tiny Qwen chat tokenizer (VL families): special-token ids and the fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = _train_tokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=8192,
    )
    return ids, tokenizer


def write_tiny_qwen25_vl(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2.5-VL (model, tokenizer, processor) into ``folder``.

    Deterministic: the same ``seed`` writes the same files. Global RNG state is
    left untouched. Returns ``folder``.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids, tokenizer = _chat_tokenizer()
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=_PIXELS, max_pixels=_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
        ),
        video_processor=Qwen2VLVideoProcessor(
            min_pixels=_PIXELS, max_pixels=2 * _PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": tokenizer.backend_tokenizer.get_vocab_size(),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 8192,
            "rope_parameters": _ROPE,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=_VISION,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    return folder


def _omni_thinker(folder: Path, seed: int):
    """Save the Omni processor into ``folder``; return the tiny thinker and its config."""
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer()
    tok.add_special_tokens(list(OMNI_TOKENS.values()))
    ids = {k: tok.token_to_id(v) for k, v in OMNI_TOKENS.items()}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=OMNI_CHAT_TEMPLATE,
        extra_special_tokens=OMNI_TOKENS,
    )
    Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=_PIXELS, max_pixels=_PIXELS),
        video_processor=Qwen2VLVideoProcessor(min_pixels=_PIXELS, max_pixels=2 * _PIXELS),
        # 16 kHz, 30 s per excerpt, 16 mel bins (the real one has 128)
        feature_extractor=WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, chunk_length=30),
        tokenizer=tokenizer,
        chat_template=OMNI_CHAT_TEMPLATE,
    ).save_pretrained(folder)
    eos = tok.token_to_id("<|im_end|>")
    config = Qwen2_5OmniThinkerConfig(
        audio_config={
            "num_mel_bins": 16,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 32,
            "d_model": 16,
            "output_dim": 32,
        },
        vision_config=_VISION,
        text_config={
            "vocab_size": tokenizer.backend_tokenizer.get_vocab_size(),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": _ROPE,
            "eos_token_id": eos,
            "pad_token_id": tok.token_to_id("<|endoftext|>"),
        },
        audio_token_index=ids["audio_token"],
        image_token_index=ids["image_token"],
        video_token_index=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"],
        vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"],
        user_token_id=tok.token_to_id("<|im_start|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.token_to_id("<|endoftext|>")
    return model, config


def write_tiny_qwen25_omni(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2.5-Omni in the layout of a full Omni download.

    ``config.json`` is a ``qwen2_5_omni`` config; ``model.safetensors`` holds the
    thinker under ``thinker.`` plus stand-in ``talker.`` / ``token2wav.`` tensors
    (the Director never loads them). Deterministic for a seed; returns ``folder``.
    """
    from safetensors.torch import save_file
    from transformers import Qwen2_5OmniConfig

    folder = Path(folder)
    model, thinker = _omni_thinker(folder, seed)
    weights = {"thinker." + k: v.contiguous() for k, v in model.state_dict().items()}
    weights["talker.model.embed_tokens.weight"] = torch.zeros(4, 4)
    weights["token2wav.code2wav_bigvgan_model.conv_pre.weight"] = torch.zeros(2)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    full = Qwen2_5OmniConfig(thinker_config=thinker.to_dict())
    full.architectures = ["Qwen2_5OmniForConditionalGeneration"]
    full.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    return folder


def write_tiny_qwen25_omni_thinker(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2.5-Omni *thinker* folder (``qwen2_5_omni_thinker``).

    It reads image, audio (16 kHz, Whisper features) and text and writes text, like the
    thinker of Qwen2.5-Omni-3B/7B saved on its own. Deterministic for a seed; returns ``folder``.
    """
    folder = Path(folder)
    model, _ = _omni_thinker(folder, seed)
    model.save_pretrained(folder)
    return folder


def write_tiny_qwen3_vl(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen3-VL (model, tokenizer, processor) into ``folder``.

    Same tokenizer and chat markup as the Qwen2.5-VL writer; 16-pixel patches,
    interleaved M-RoPE and one DeepStack layer as in Qwen3-VL. Deterministic for a
    seed; returns ``folder``.
    """
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids, tokenizer = _chat_tokenizer()
    patches = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2}
    Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=64 * 64, max_pixels=64 * 64, image_mean=[0.5] * 3, image_std=[0.5] * 3, **patches
        ),
        video_processor=Qwen3VLVideoProcessor(**patches),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(folder)
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": tokenizer.backend_tokenizer.get_vocab_size(),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 8192,
            "rope_parameters": {**_ROPE, "rope_theta": 5e6, "mrope_interleaved": True},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    return folder
