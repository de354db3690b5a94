"""Blueprint DiT Sampler: windows, prompts, frames on disk, determinism, reuse, bounded memory.

Real tiny demo models (written by the demo-model factory, loaded by the real loaders) render
short blueprints on CPU. The ten-minute memory test replaces only the per-window DiT/VAE call
by a clearly labelled stand-in (a real tiny-model render of ten minutes takes far too long on
two shared CPU cores); everything around it (planning, prompts, re-anchoring, cross-fades,
the on-disk store, the lazy view, keyframe extraction) is the real code.
"""

from fractions import Fraction

import pytest
import torch

from avatar_cascade.artefacts.blueprint import Blueprint
from avatar_cascade.core.errors import InputError
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.blueprint.plan import choose_shots, plan_window_spans, plan_windows
from avatar_cascade.stages.blueprint.sampler import (
    BlueprintSettings,
    blueprint_frame_count,
    render_blueprint,
)
from avatar_cascade.stages.director.rules import rule_based_storyline
from tests.helpers import ForwardCounter, aligned_tone
from tests.helpers import cpu_runtime as _runtime

SR = 16000
FAST = SamplerSettings(steps=2, guidance=1.0, shift=3.0)


# ``wan_models`` (the tiny demo DiT, VAE, text encoder) comes from conftest.py. The audio is a 220 Hz tone
# gated at 0.7 Hz (pauses for the seams).


@pytest.fixture(scope="module")
def reference():
    g = torch.Generator().manual_seed(5)
    return torch.rand(48, 40, 3, generator=g)


@pytest.fixture(scope="module")
def short():
    """3 s at 16 fps in clips of 17 frames (seams every second), its storyline."""
    aligned = aligned_tone(3.0, gate_hz=0.7)
    return aligned, rule_based_storyline("a calm talk", aligned.timeline, [-30.0, -12.0, -20.0])


def _settings(seed=0, **kw):
    base = dict(width=32, height=32, fps=4, window_frames=9, seed=seed, sampler=FAST, lead_frames=4)
    base.update(kw)
    return BlueprintSettings(**base)


@pytest.fixture(scope="module")
def rendered(wan_models, reference, short, tmp_path_factory):
    """Seed 0 twice (two work folders) and seed 1, each 13 frames = 2 windows (lead 4)."""
    aligned, story = short
    out = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        wd = tmp_path_factory.mktemp(f"bp_{name}")
        out[name] = (
            render_blueprint(wan_models, reference, aligned, story, _settings(seed), _runtime(), work_dir=wd),
            wd,
        )
    return out


def test_window_plan_tiles_the_blueprint_and_starts_every_window_before_its_chunk():
    for total, w, lead in ((13, 9, 4), (100, 33, 1), (5, 9, 1), (34, 17, 5), (4800, 33, 8)):
        spans = plan_window_spans(total, w, lead)
        assert spans[0][:3] == (0, spans[0][1], 0) and all((n - 1) % 4 == 0 and n <= w for _, n, _, _ in spans)
        # chunks tile [0, total) exactly; every window renders its chunk, after its lead frames
        assert sum(c for *_, c in spans) == total
        assert all(a + c == b for (_, _, a, c), (_, _, b, _) in zip(spans, spans[1:]))
        assert all(s + n >= c0 + c for s, n, c0, c in spans)
        assert all(c0 - s == lead for s, _, c0, _ in spans[1:])  # every later window: lead frames, then its chunk


def test_window_spanning_several_shots_majority_centre_combine(short):
    aligned, story = short
    assert choose_shots([0, 0, 1, 1, 1], "majority") == (1,)
    assert choose_shots([0, 0, 0, 1, 1], "centre") == (0,)
    assert choose_shots([0, 1, 1, 2], "combine") == (0, 1, 2)
    assert choose_shots([0, 0, 1, 1], "majority") == (0,)  # tie -> the shot at the centre frame
    bp_fps = Fraction(4)
    total = blueprint_frame_count(aligned, bp_fps)
    combined = plan_windows(aligned.timeline, story, bp_fps, total, 9, 1, "combine")
    assert combined[0].shots == (0, 1)  # frames 0..8 at 4 fps show 0..2 s: shots 0 and 1 (seam frames close a shot)
    assert combined[0].prompt.startswith(story.global_prompt()) and " Then " in combined[0].prompt
    for k in (0, 1):
        assert story.shots[k].prompt in combined[0].prompt
    major = plan_windows(aligned.timeline, story, bp_fps, total, 9, 1, "majority")
    assert len(major[0].shots) == 1 and major[0].prompt == story.shot_prompt(major[0].shots[0])


def test_settings_are_checked_with_the_input_named():
    with pytest.raises(InputError, match="lead_frames"):
        _settings(lead_frames=9).check()
    with pytest.raises(InputError, match="framing"):
        _settings(framing="stretch").check()
    with pytest.raises(InputError, match="prompt_mode"):
        _settings(prompt_mode="loudest").check()
    with pytest.raises(InputError, match="window_frames"):
        _settings(window_frames=10).check()


def test_blueprint_frames_are_on_disk_and_read_lazily(rendered, short, tmp_path):
    bp, wd = rendered["a"]
    aligned, _ = short
    assert len(bp) == blueprint_frame_count(aligned, Fraction(4)) == 13
    assert bp.folder.parent == wd / "blueprint" and len(list(bp.folder.glob("window_*.safetensors"))) == 2
    all_frames = bp.frames(0, len(bp))
    assert all_frames.shape == (13, 32, 32, 3) and all_frames.dtype == torch.uint8
    assert torch.equal(bp.frames[3:7], all_frames[3:7]) and torch.equal(bp.frame(12), all_frames[12])
    # the view keeps at most one chunk in memory
    assert bp._cached is not None and bp._cached[1].shape[0] <= 9
    # saved in its work folder (index only) and elsewhere (store copied): same frames
    for folder in (wd, tmp_path / "elsewhere"):
        bp.save(folder)
        again = Blueprint.load(folder)
        assert again.folder.is_relative_to(folder)
        assert torch.equal(again.frames(0, len(again)), all_frames) and again.fps == Fraction(4)
    path = bp.write_video(wd / "blueprint.mp4")
    from avatar_cascade.media import probe_media

    assert probe_media(path)["video_frames"] == 13


def test_same_seed_same_blueprint_other_seed_other_blueprint(rendered):
    a, b, c = (rendered[k][0] for k in "abc")
    assert a.key == b.key and a.key != c.key
    fa, fb, fc = (x.frames(0, len(x)) for x in (a, b, c))
    assert torch.equal(fa, fb)
    assert (fa.float() - fc.float()).abs().mean() > 1.0


def test_unchanged_inputs_reuse_the_blueprint_without_a_dit_forward(rendered, wan_models, reference, short):
    dit, vae = wan_models.dit, wan_models.vae
    aligned, story = short
    bp, wd = rendered["a"]
    counter = ForwardCounter(dit.transformer, vae.vae)
    try:
        again = render_blueprint(wan_models, reference, aligned, story, _settings(0), _runtime(), work_dir=wd)
    finally:
        counter.close()
    assert counter.count == 0 and again.reused and not bp.reused
    assert again.folder == bp.folder and torch.equal(again.frames(0, 13), bp.frames(0, 13))


def test_an_interrupted_blueprint_resumes_after_its_last_finished_window(
    rendered, wan_models, reference, short, tmp_path
):
    import shutil

    aligned, story = short
    bp, _ = rendered["a"]
    # a copy of the finished store, with the last window lost and the index not marked complete
    folder = tmp_path / "blueprint" / bp.key
    shutil.copytree(bp.folder, folder)
    (folder / "window_00001.safetensors").unlink()
    meta = dict(bp.meta, complete=False)
    (folder / "index.json").write_text(__import__("json").dumps(meta))
    counter = ForwardCounter(wan_models.dit.transformer)
    try:
        resumed = render_blueprint(wan_models, reference, aligned, story, _settings(0), _runtime(), work_dir=tmp_path)
    finally:
        counter.close()
    assert counter.count == FAST.steps  # one window re-rendered, not two
    assert torch.equal(resumed.frames(0, 13), bp.frames(0, 13))


def test_the_key_covers_the_reference(rendered, wan_models, short, reference):
    aligned, story = short
    bp, _ = rendered["a"]
    other = torch.zeros(48, 40, 3)
    from avatar_cascade.media.framing import frame_reference
    from avatar_cascade.stages.blueprint.sampler import blueprint_key, blueprint_size

    windows = plan_windows(aligned.timeline, story, Fraction(4), 13, 9, 4, "majority")
    w, h, sampler, _ = blueprint_size(wan_models, reference, aligned, _settings(0))
    framed = frame_reference(reference, w, h, "bucket")
    assert blueprint_key(wan_models, framed, aligned, windows, _settings(0), sampler) == bp.key
    other_framed = frame_reference(other, w, h, "bucket")
    assert blueprint_key(wan_models, other_framed, aligned, windows, _settings(0), sampler) != bp.key


def test_a_text_to_video_dit_is_refused_with_a_fix(wan_models, reference, short):
    import dataclasses

    aligned, story = short
    fake_t2v = dataclasses.replace(wan_models.dit, transformer=torch.nn.Linear(1, 1))
    fake_t2v.transformer.config = type("C", (), {"in_channels": 16})()
    with pytest.raises(InputError, match="36 input channels"):
        render_blueprint(
            dataclasses.replace(wan_models, dit=fake_t2v), reference, aligned, story, _settings(), _runtime()
        )


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow  # 4801 frames through the real planning, store and keyframe extraction
def test_ten_minutes_keeps_memory_bounded_and_frames_on_disk(wan_models, reference, tmp_path, monkeypatch):
    """STAND-IN: the per-window DiT/VAE render is replaced by a fast frame generator (labelled).

    A real tiny-model render of 10 minutes takes tens of minutes on 2 shared cores; see
    ``benchmarks/bench_blueprint.py`` for real renders of 1, 5 and 10 minutes.
    """
    import avatar_cascade.stages.blueprint.sampler as blueprint_mod
    from avatar_cascade.stages.keyframes.extractor import extract_keyframes
    from avatar_cascade.stages.keyframes.settings import KeyframeSettings

    def standin_sample_windows(dit, vae, reqs, sampler, runtime, image_embeds, h, w, batch):
        out = []
        for request in reqs:
            g = torch.Generator().manual_seed(request.seed)
            start = ((request.known[max(request.known)].permute(1, 2, 0) + 1) * 127.5).round()
            drift = torch.randint(-6, 7, (request.num_frames, 1, 1, 3), generator=g).cumsum(0)
            out.append((start[None] + drift).clamp(0, 255).to(torch.uint8))
        return torch.stack(out)

    monkeypatch.setattr(blueprint_mod, "sample_windows", standin_sample_windows)
    aligned = aligned_tone(600.0, fps=25, clip_frames=81, gate_hz=0.7)
    story = rule_based_storyline("talk", aligned.timeline, None)
    rss = []
    rt = _runtime(preview=lambda kind, payload: rss.append(_rss_mb()) if kind == "blueprint" else None)
    settings = BlueprintSettings(width=96, height=64, fps=8, window_frames=33, sampler=FAST, lead_frames=8)
    bp = render_blueprint(wan_models, reference, aligned, story, settings, rt, work_dir=tmp_path)
    frame_bytes = bp.width * bp.height * 3
    assert len(bp) == 4801 and len(rss) == len(bp.window_starts) > 150
    on_disk = sum(p.stat().st_size for p in bp.folder.glob("window_*.safetensors"))
    assert on_disk >= len(bp) * frame_bytes  # every frame went to disk (~85 MB)
    growth = max(rss[10:]) - rss[10]
    assert growth < 0.25 * len(bp) * frame_bytes / 2**20, f"RSS grew {growth:.0f} MB over {len(rss)} windows"

    kf = extract_keyframes(bp, aligned, reference, KeyframeSettings(width=64, height=48), _runtime())
    assert len(kf.images) == len(aligned.timeline.clips) + 1 == len(aligned.timeline.seams)
    assert bp._cached is None or bp._cached[1].shape[0] <= 33


def test_an_audio_adapter_gets_the_audio_at_blueprint_rate(wan_models, reference, audio_encoder, audio_adapter_file):
    import dataclasses

    from avatar_cascade.models import audio_adapter as AA

    dit = wan_models.dit
    encoder = audio_encoder
    t = torch.arange(2 * SR) / SR
    wave = (0.3 * torch.sin(2 * torch.pi * 220 * t) * (t > 0.8)).float()[None]
    aligned = aligned_tone(2.0, wave=wave, audio_encoder=encoder)
    assert aligned.features is not None
    story = rule_based_storyline("talk", aligned.timeline, None)
    adapter = AA.load_audio_adapter(audio_adapter_file, dit)
    talking = adapter.attach(dit)
    seen = []
    try:
        settings = _settings(0)
        plain = render_blueprint(wan_models, reference, aligned, story, settings, _runtime())
        original = adapter.audio_context

        def spy(audio):
            seen.append(None if audio is None else tuple(audio.shape))
            return original(audio)

        adapter.audio_context = spy
        voiced = render_blueprint(
            dataclasses.replace(wan_models, dit=talking), reference, aligned, story, settings, _runtime()
        )
    finally:
        adapter.detach()
    assert voiced.key != plain.key
    # every forward of every window got [rows, blueprint frames, window, layers, dim] audio
    assert seen and all(s is not None and s[1] == 9 and s[2] == aligned.window for s in seen)
    assert (voiced.frames(0, len(voiced)).float() - plain.frames(0, len(plain)).float()).abs().mean() > 0.5


def test_old_stores_are_pruned_but_the_current_one_is_kept(tmp_path):
    import os

    from avatar_cascade.artefacts.blueprint import INDEX, prune_stores

    frames = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    stores = [Blueprint.from_frames(frames, 8, tmp_path / f"k{i}", key=f"k{i}") for i in range(4)]
    for i, bp in enumerate(stores):
        os.utime(bp.folder / INDEX, (1000 + i, 1000 + i))
        bp.release()  # runs that have finished with their stores (a live lease is never pruned)
    prune_stores(tmp_path, keep=2, current=stores[0].folder)  # the current one is the oldest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k0", "k3"]
    with pytest.raises(InputError, match="Blueprint Sampler again"):
        stores[1].frames(0, 3)
