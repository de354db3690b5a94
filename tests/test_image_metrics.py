"""Shared image statistics: CIELAB / delta E against reference values, the seam ratio on planted jumps."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.media.image_metrics import delta_e, frame_jumps, rgb_to_lab, seam_ratio, shrink, thumbnails


def test_lab_matches_published_values_and_scikit_image():
    known = {
        (1.0, 1.0, 1.0): (100.0, 0.0, 0.0),
        (1.0, 0.0, 0.0): (53.24, 80.09, 67.20),
        (0.0, 0.0, 1.0): (32.30, 79.19, -107.86),
    }
    for rgb, lab in known.items():
        assert rgb_to_lab(torch.tensor(rgb)).tolist() == pytest.approx(lab, abs=0.05)
    color = pytest.importorskip("skimage.color", reason="scikit-image (extra 'detectors') is not installed")
    x = torch.rand(64, 3, generator=torch.Generator().manual_seed(0))
    ref = torch.from_numpy(color.rgb2lab(x.numpy()[None])[0]).float()
    assert torch.allclose(rgb_to_lab(x), ref, atol=0.05)


def test_delta_e_of_mean_colours():
    grey = torch.full((1, 8, 8, 3), 128, dtype=torch.uint8)
    warm = grey.clone()
    warm[..., 0] = 150
    assert delta_e(grey, grey[0]).item() == pytest.approx(0.0, abs=1e-4)
    expected = (
        rgb_to_lab(torch.tensor([150 / 255, 128 / 255, 128 / 255])) - rgb_to_lab(torch.tensor([128 / 255] * 3))
    ).norm()
    assert delta_e(warm, grey[0]).item() == pytest.approx(expected.item(), rel=1e-4)


def test_seam_ratio_on_a_planted_cut():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 64, 64, 3, generator=g)
    frames = [(base + 0.01 * i).clamp(0, 1) for i in range(10)]
    frames[6] = frames[6].flip(2)  # a cut between frames 5 and 6 (then back at 7)
    x = (torch.cat(frames) * 255).round().to(torch.uint8)
    jumps = frame_jumps(thumbnails(shrink(x, 32), 32))
    assert jumps.numel() == 9 and int(jumps.argmax()) in (5, 6)
    assert seam_ratio(jumps, 5) > 10 and seam_ratio(jumps, 2) < 3
