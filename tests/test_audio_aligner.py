"""Audio Aligner: seams snapped into pauses, wav2vec2 features at the video rate (tiny real model),
frame windows, ComfyUI's AUDIO_ENCODER_OUTPUT, bad input, the timeline picture and the node."""

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.storyline import Shot, Storyline
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import AudioTrack, VideoWriter
from avatar_cascade.media.timeline_plot import NOMINAL, SEAM, SHOT_A, SNAPPED
from avatar_cascade.stages.aligner.aligner import align_audio, as_audio_track
from avatar_cascade.stages.aligner.features import conv_geometry, extract_frame_features, features_from_comfy_output
from avatar_cascade.stages.aligner.settings import AlignerSettings
from nodes import NODE_CLASS_MAPPINGS
from nodes.comfy_bridge import preview_image
from tests.helpers import cpu_runtime, speechlike, tone

SR = 16000


@pytest.fixture(scope="module")
def encoder(audio_encoder):
    """The demo models' tiny wav2vec2 (hidden 32, 2 layers, the real 320x CNN): conftest's ``audio_encoder``."""
    return audio_encoder


def align(audio, fps, clip_frames, rt, audio_encoder=None, audio_encoder_output=None, **kw):
    """``align_audio`` with ``AlignerSettings(fps, clip_frames, **kw)``, on the fixed grid unless
    ``snap_seams_frames`` is given."""
    settings = AlignerSettings(fps=fps, clip_frames=clip_frames, **{"snap_seams_frames": 0, **kw})
    return align_audio(audio, settings, rt, audio_encoder=audio_encoder, audio_encoder_output=audio_encoder_output)


def runtime(previews=None) -> Runtime:
    """A CPU runtime; with a ``previews`` list it collects ``(kind, payload)`` of every preview."""
    return cpu_runtime(preview=None if previews is None else lambda kind, payload: previews.append((kind, payload)))


# -- seams ---------------------------------------------------------------------


def test_seam_snaps_into_a_planted_silence():
    wav = tone(20.0)
    gap = (3.58, 3.92)  # frames 89.5..98 at 25 fps; nominal seam at frame 80 (3.2 s), reachable with 16 frames
    wav[:, int(gap[0] * SR) : int(gap[1] * SR)] = 0
    # max_clip_frames 97: the grid stays at 81 and clips may grow to 97 (the default caps them at 81)
    aligned = align(AudioTrack(wav, SR), 25, 81, runtime(), snap_seams_frames=16, max_clip_frames=97)
    tl = aligned.timeline
    assert tl.nominal_seams[:3] == [0, 80, 160]
    seam = tl.seams[1]
    assert gap[0] <= seam / 25 and (seam + 1) / 25 <= gap[1], seam  # the keyframe lies inside the silence
    assert tl.snapped_seams == [1]  # a steady tone elsewhere: the other seams stay on the grid
    assert tl.meta["seams_in_pause"][0] is True and not any(tl.meta["seams_in_pause"][1:])
    assert all((c.num_frames - 1) % 4 == 0 for c in tl.clips)
    # Without snapping the grid stays nominal.
    plain = align(AudioTrack(wav, SR), 25, 81, runtime()).timeline
    assert plain.seams == plain.nominal_seams and plain.snapped_seams == []


def test_snapped_clips_never_exceed_clip_frames_and_the_timeline_reports_its_lengths(tmp_path):
    """Default cap: with snapping the grid is clip_frames - tolerance (73 for 81 and 8), seams move both ways
    into pauses, and no clip is longer than clip_frames (the model's trained length); the equal-length
    penalty keeps few distinct lengths; timeline.json carries the clip-length histogram."""
    wav = speechlike(60.0, SR)
    tl = align(AudioTrack(wav, SR), 25, 81, runtime(), snap_seams_frames=8).timeline
    lengths = [c.num_frames for c in tl.clips]
    assert max(lengths) <= 81 and tl.clip_frames == 73
    assert tl.snapped_seams, "speech-like audio has pauses to snap to"
    hist = tl.clip_length_histogram
    assert sum(hist.values()) == len(tl.clips) and set(hist) == set(lengths)
    assert len(hist) <= 4, hist  # 60 s of speech used to give seven distinct lengths up to 97 frames
    assert tl.to_dict()["clip_length_histogram"] == {str(k): v for k, v in hist.items()}


def test_snapping_and_overlap_keep_audio_ranges_exact_at_ntsc_48k_stereo():
    wav = speechlike(30.0, 48000).repeat(2, 1)
    aligned = align(AudioTrack(wav, 48000), "30000/1001", 33, runtime(), snap_seams_frames=8, overlap_frames=4)
    tl = aligned.timeline
    assert tl.clips[0].sample_range[0] == 0 and tl.clips[-1].sample_range[1] == wav.shape[1]
    assert all(a.sample_range[1] == b.sample_range[0] for a, b in zip(tl.clips, tl.clips[1:]))
    assert all(abs(a - b) <= 8 for a, b in zip(tl.seams, tl.nominal_seams))
    last_t = Fraction(tl.num_frames - 1) / tl.fps
    assert Fraction(wav.shape[1], 48000) - last_t <= 1 / tl.fps  # the last frame is within one frame of the end


# -- features ------------------------------------------------------------------


def test_features_one_row_per_frame_with_every_layer(encoder):
    aligned = align(AudioTrack(speechlike(3.0), SR), 25, 17, runtime(), audio_encoder=encoder)
    f = aligned.features
    layers = encoder.num_layers + 1
    assert f.dtype == torch.float16 and f.shape == (75, layers, encoder.hidden_size)
    assert torch.isfinite(f).all() and f.float().std() > 0.1
    assert aligned.timeline.meta["features"] == {
        "source": encoder.identity, "mode": "video", "layers": layers, "dim": encoder.hidden_size, "window": 5
    }  # fmt: skip


def test_native_mode_matches_the_encoder_at_its_own_frame_centres(encoder):
    """Our piecewise model run (streamed GroupNorm, hooked layers) equals AudioEncoder.encode()."""
    x = speechlike(4.0)[0]
    ref = encoder.encode(x).permute(1, 0, 2)  # [T50, layers, dim]
    geo = conv_geometry(encoder.model.config)
    at_frames = torch.arange(ref.shape[0], dtype=torch.float64) * geo.stride / SR  # CNN frame k sits at 320k samples
    got = extract_frame_features(encoder, x, at_frames, runtime(), mode="native", chunk_s=None)
    torch.testing.assert_close(got.float(), ref, atol=4e-3, rtol=2e-3)


def test_video_mode_reproduces_infinitetalks_interpolation(encoder):
    """At 25 fps, 'video' mode equals InfiniteTalk's recipe: CNN features stretched to seconds*25 rows with
    F.interpolate(align_corners=True), then the transformer (checked on the last layer, via HF modules)."""
    x = speechlike(4.0, seed=5)[0]
    got = extract_frame_features(encoder, x, torch.arange(100, dtype=torch.float64) / 25, runtime(), chunk_s=None)
    model = encoder.model
    with torch.no_grad():
        xn = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        cnn = model.feature_extractor(xn[None])  # [1, 16, 199]
        rows = torch.nn.functional.interpolate(cnn, size=100, mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = model.feature_projection(rows)
        ref = model.encoder(hidden).last_hidden_state[0]
    assert cnn.shape[-1] == 199
    torch.testing.assert_close(got[:, -1].float(), ref, atol=4e-3, rtol=2e-3)


def test_blockwise_cnn_with_streamed_groupnorm_equals_one_pass(encoder, monkeypatch):
    """The CNN pass over long audio in blocks (whole-track GroupNorm statistics) is exact."""
    import avatar_cascade.stages.aligner.features as af

    monkeypatch.setattr(af, "_CNN_BLOCK", 37)  # many blocks over 3 s (149 CNN frames)
    monkeypatch.setattr(af, "_STATS_BLOCK", 1000)  # and many statistics blocks
    x = af.prepare_waveform(speechlike(3.0)[0], True, 400)
    with torch.no_grad():
        blocks = af.cnn_features(encoder.model, x, conv_geometry(encoder.model.config), runtime())
        whole = encoder.model.feature_extractor(x[None])[0].transpose(0, 1)
    assert blocks.shape == whole.shape == (149, 16)
    torch.testing.assert_close(blocks, whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 192000])
def test_blockwise_resampling_equals_one_pass(sr):
    from avatar_cascade.media import resample
    from avatar_cascade.stages.aligner.features import resample_long

    x = speechlike(4.0, sr)[0]
    blocks = resample_long(x, sr, SR, block_s=0.5)
    torch.testing.assert_close(blocks, resample(x, sr, SR), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["video", "native"])
def test_chunked_equals_one_shot(encoder, mode):
    x = speechlike(12.0, seed=3)[0]
    times = torch.arange(300, dtype=torch.float64) / 25
    one = extract_frame_features(encoder, x, times, runtime(), mode=mode, chunk_s=None).float()
    chunked = extract_frame_features(encoder, x, times, runtime(), mode=mode, chunk_s=2.0, context_s=1.0).float()
    assert (chunked - one).abs().max() < 0.02 * one.abs().max()
    assert (chunked - one).abs().mean() < 1e-3 * one.abs().mean() + 1e-3


def test_frame_windows_shapes_and_zero_padding(encoder):
    aligned = align(AudioTrack(speechlike(2.0), SR), 25, 17, runtime(), audio_encoder=encoder)
    f = aligned.features  # 50 frames
    w = aligned.frame_windows([0, Fraction(1, 25), 1.0, Fraction(49, 25), 2.0])
    assert w.shape == (5, 5, f.shape[1], f.shape[2]) and w.dtype == torch.float16
    assert (w[0, :2] == 0).all() and torch.equal(w[0, 2:], f[0:3])  # taps before the audio are zero
    assert (w[1, 0] == 0).all() and torch.equal(w[1, 1:], f[0:4])
    assert torch.equal(w[2], f[23:28])  # centred on frame 25
    assert torch.equal(w[3, :3], f[47:50]) and (w[3, 3:] == 0).all()  # taps past the audio end are zero
    assert (w[4, :2] != 0).any() and (w[4, 2:] == 0).all()
    edge = aligned.frame_windows([0.0], pad="edge")
    assert torch.equal(edge[0, 0], f[0]) and torch.equal(edge[0, 1], f[0])  # InfiniteTalk's clamping
    it = aligned.frame_windows(torch.tensor([0.5]), window=3, layers=slice(1, None))
    assert it.shape == (1, 3, f.shape[1] - 1, f.shape[2]) and torch.equal(it[0, 1], f[13, 1:])  # 12.5 rounds up
    # Blueprint times at 8 fps pick the nearest video frame.
    bp = aligned.frame_windows([Fraction(k, 8) for k in range(16)])
    assert torch.equal(bp[5, 2], f[round(5 / 8 * 25)])


def test_clip_windows_cover_every_rendered_frame(encoder):
    aligned = align(AudioTrack(speechlike(3.0), SR), 25, 17, runtime(), audio_encoder=encoder, overlap_frames=4)
    tl, f = aligned.timeline, aligned.features
    for c in tl.clips:
        cw = aligned.clip_windows(c.index)
        assert cw.shape == (c.render_frames, 5, f.shape[1], f.shape[2])
        for k in range(c.render_frames):
            frame = c.render_start + k
            assert torch.equal(cw[k, 2], f[frame]) if frame < tl.num_frames else (cw[k, 2] == 0).all()
    with pytest.raises(InputError) as e:
        aligned.clip_windows(len(tl.clips))
    assert e.value.input_name == "clip_index"
    bare = align(AudioTrack(speechlike(1.0), SR), 25, 17, runtime())
    with pytest.raises(InputError, match="audio encoder"):
        bare.frame_windows([0.0])


def _comfy_output(encoder, x: torch.Tensor, batch: int = 1) -> dict:
    """ComfyUI's AudioEncoderEncode output made from the same real model (50 Hz states, all layers)."""
    states = encoder.encode(x)  # [layers, T50, dim]
    layers = [s[None].repeat(batch, 1, 1) for s in states]
    return {"encoded_audio": layers[-1], "encoded_audio_all_layers": layers, "audio_samples": x.numel()}


def test_comfy_audio_encoder_output_is_accepted(encoder):
    x = speechlike(3.0)[0]
    ours = align(AudioTrack(x[None], SR), 25, 17, runtime(), audio_encoder=encoder, feature_mode="native")
    rt = runtime()
    comfy = align(AudioTrack(x[None], SR), 25, 17, rt, audio_encoder_output=_comfy_output(encoder, x))
    assert comfy.features.shape == ours.features.shape
    assert any(w.startswith("aligner:") and "trained on features resampled before" in w for w in rt.warnings)
    torch.testing.assert_close(comfy.features.float(), ours.features.float(), atol=4e-3, rtol=2e-3)
    assert comfy.timeline.meta["features"]["source"] == "AUDIO_ENCODER_OUTPUT"
    times = torch.arange(75, dtype=torch.float64) / 25
    with pytest.raises(InputError, match="batch of 2"):
        features_from_comfy_output(_comfy_output(encoder, x, batch=2), times, 3.0)
    with pytest.raises(InputError, match="different audio"):
        features_from_comfy_output(_comfy_output(encoder, x), times, 5.0)
    with pytest.raises(InputError, match="not a wav2vec2"):
        features_from_comfy_output({"encoded_audio": torch.zeros(1, 10, 4)}, times, 3.0)  # Whisper-style


# -- input checks ----------------------------------------------------------------


def _write_audio(path, wav: np.ndarray, sr: int, codec: str, fmt: str, container: str | None = None) -> None:
    layout = {1: "mono", 2: "stereo"}[wav.shape[0]]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.layout, stream.format = layout, fmt
        for pos in range(0, wav.shape[1], 960):
            chunk = np.ascontiguousarray(wav[:, pos : pos + 960].T.reshape(1, -1).astype(np.float32))
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout=layout)
            frame.sample_rate, frame.pts = sr, pos
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_files_of_any_kind_go_through_the_aligner(tmp_path, encoder):
    wav = speechlike(1.5, 48000).repeat(2, 1)
    _write_audio(tmp_path / "a.ogg", wav.numpy(), 48000, "libopus", "flt", "ogg")
    video = tmp_path / "talk.mp4"
    with VideoWriter(video, Fraction(25), 64, 64, audio=AudioTrack(wav, 48000)) as w:
        w.write(np.zeros((38, 64, 64, 3), np.uint8))
    for path in (tmp_path / "a.ogg", video):
        aligned = align(path, 25, 17, runtime(), audio_encoder=encoder)
        assert aligned.audio.sample_rate == 48000 and abs(aligned.audio.duration_s - 1.5) < 0.03
        assert aligned.features.shape[0] == aligned.timeline.num_frames


def test_bad_audio_gives_clear_errors(tmp_path):
    rt = runtime()
    silent_video = tmp_path / "silent.mp4"
    with VideoWriter(silent_video, Fraction(25), 64, 64) as w:
        w.write(np.zeros((5, 64, 64, 3), np.uint8))
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00garbage" + bytes(range(256)) * 4)
    nan = tone(1.0)
    nan[0, 100] = float("nan")
    cases = [
        (silent_video, "no audio stream"),
        (tmp_path / "junk.wav", "could not be decoded|no audio"),
        (AudioTrack(nan, SR), "invalid samples"),
        ({"waveform": tone(1.0)[None].repeat(2, 1, 1), "sample_rate": SR}, "batch of 2"),
        ({"waveform": torch.zeros(1, 1, 0), "sample_rate": SR}, "non-empty"),
        ({"waveform": tone(1.0)[None] * float("inf"), "sample_rate": SR}, "NaN"),
        (42, "is not audio"),
    ]
    for audio, message in cases:
        with pytest.raises(InputError, match=message) as e:
            align(audio, 25, 17, rt)
        assert e.value.input_name == "audio" and "Fix:" in str(e.value)
    with pytest.raises(InputError, match="longer than the limit of 2 s") as e:
        align(AudioTrack(tone(3.0), SR), 25, 17, rt, max_duration_s=2.0)
    wav = tmp_path / "long.wav"
    _write_audio(wav, tone(3.0).numpy(), SR, "pcm_f32le", "flt")
    with pytest.raises(InputError, match="limit of 2 s"):
        align(wav, 25, 17, rt, max_duration_s=2)


def test_documented_behaviour_for_odd_but_valid_audio():
    rt = runtime()
    silent = align(AudioTrack(torch.zeros(1, SR), SR), 25, 17, rt, snap_seams_frames=8)
    assert any("silent" in w for w in silent.timeline.meta["warnings"])
    short = align(AudioTrack(tone(0.1), SR), 25, 81, rt)  # 3 frames: one 5-frame clip
    assert short.timeline.num_frames == 3 and [c.num_frames for c in short.timeline.clips] == [5]
    # int16 ComfyUI waveforms are scaled to -1..1; float above full scale is scaled down, not clipped
    ints = {"waveform": (tone(1.0, channels=2)[None] * 32767).to(torch.int16), "sample_rate": 44100}
    assert abs(float(as_audio_track(ints).waveform.abs().max()) - 0.3) < 1e-3
    loud = as_audio_track({"waveform": tone(1.0)[None] * 10, "sample_rate": SR})
    assert abs(float(loud.waveform.abs().max()) - 1.0) < 1e-6
    # multichannel at 192 kHz works (downmixed for features and seams)
    surround = align(AudioTrack(tone(0.5, 192000, channels=6), 192000), 48, 17, rt, snap_seams_frames=4)
    assert surround.audio.num_channels == 6 and surround.timeline.num_frames == 24


def test_piecewise_loudness_equals_torchaudios(monkeypatch):
    import torchaudio.functional as AF

    import avatar_cascade.stages.aligner.loudness as L

    monkeypatch.setattr(L, "_PIECE_S", 1.3)  # many pieces, each K-weighted after a warm-up
    for sr, channels in ((48000, 2), (44100, 5), (11025, 1)):
        x = speechlike(4.0, sr).repeat(channels, 1) * torch.linspace(0.3, 1.0, channels)[:, None]
        assert abs(L.integrated_loudness(x, sr) - float(AF.loudness(x, sr))) < 1e-3
    assert L.integrated_loudness(torch.zeros(2, 48000), 48000) == -math.inf


def test_loudness_normalisation():
    import torchaudio.functional as AF

    quiet = speechlike(3.0, 48000).repeat(2, 1) * 0.1
    aligned = align(AudioTrack(quiet, 48000), 25, 17, runtime(), loudness_lufs=-23.0)
    assert abs(float(AF.loudness(aligned.audio.waveform, 48000)) + 23.0) < 0.5
    assert aligned.timeline.meta["loudness"]["gain_db"] > 10
    hot = align(AudioTrack(speechlike(3.0) * 0.1, SR), 25, 17, runtime(), loudness_lufs=-1.0)
    assert float(hot.audio.waveform.abs().max()) <= 1.0 + 1e-6 and hot.timeline.meta["loudness"]["peak_limited"]
    with pytest.raises(InputError) as e:
        align(AudioTrack(quiet, 48000), 25, 17, runtime(), loudness_lufs=5.0)
    assert e.value.input_name == "loudness_lufs"


# -- picture, save, node -----------------------------------------------------------


def _has_colour(img: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((img == np.array(colour, np.uint8)).all(axis=-1).any())


def test_timeline_picture_preview_and_files(tmp_path, encoder):
    wav = tone(8.0)
    wav[:, int(3.6 * SR) : int(3.95 * SR)] = 0
    previews = []
    aligned = align(
        AudioTrack(wav, SR), 25, 81, runtime(previews), audio_encoder=encoder, snap_seams_frames=16, max_clip_frames=97
    )
    assert 1 in aligned.timeline.snapped_seams
    ((kind, payload),) = previews
    assert kind == "timeline" and payload.dtype == torch.uint8 and payload.shape[1:] == (512, 3)
    assert preview_image(payload).size == (512, payload.shape[0])  # what the ComfyUI bridge shows
    img = payload.numpy()
    assert _has_colour(img, SNAPPED) and _has_colour(img, NOMINAL) and _has_colour(img, SEAM)

    shots = [
        Shot(c.index, c.frame_start, c.frame_end, "calm", "smile", "nod", "static", "p", "n", "rules")
        for c in aligned.timeline.clips
    ]
    story = Storyline("a presenter", "studio", "photo", "calm", shots)
    aligned.save(tmp_path, storyline=story)
    assert {p.name for p in tmp_path.iterdir()} == {"timeline.json", "timeline.png", "audio_features.safetensors"}
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "timeline.png").convert("RGB"))
    assert png.shape[1] == 1600 and _has_colour(png, SHOT_A) and _has_colour(png, SNAPPED)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "audio_features.safetensors"), "pt") as f:
        assert f.metadata()["layout"] == "frames,layers,dim"
        assert torch.equal(f.get_tensor("features"), aligned.features)


def test_node_aligns_refuses_batches_and_validates_widgets(encoder):
    node_cls = NODE_CLASS_MAPPINGS["AvatarCascadeAudioAligner"]
    audio = {"waveform": speechlike(4.0, 44100).repeat(2, 1)[None], "sample_rate": 44100}
    timeline, out_audio = node_cls().align(audio, 25.0, 33, audio_encoder=encoder, snap_seams_frames=8)
    assert isinstance(timeline, AlignedAudio) and timeline.features.shape[0] == 100
    assert timeline.timeline.snap_tolerance_frames == 8
    assert out_audio["waveform"].shape == (1, 2, 4 * 44100) and out_audio["sample_rate"] == 44100
    with pytest.raises(InputError, match="batch of 2"):
        node_cls().align({"waveform": audio["waveform"].repeat(2, 1, 1), "sample_rate": 44100}, 25.0, 33)
    with pytest.raises(InputError, match="longer than the limit"):
        node_cls().align(audio, 25.0, 33, max_duration_s=3.0)
    assert node_cls.VALIDATE_INPUTS(fps=25.0, clip_frames=81, snap_seams_frames=8, max_duration_s=60.0) is True
    for bad, name in (
        ({"clip_frames": 80}, "clip_frames"),
        ({"fps": 0.0}, "fps"),
        ({"snap_seams_frames": -4}, "snap_seams_frames"),
        ({"max_duration_s": 0.0}, "max_duration_s"),
    ):
        msg = node_cls.VALIDATE_INPUTS(**{"fps": 25.0, "clip_frames": 81, **bad})
        assert isinstance(msg, str) and name in msg
