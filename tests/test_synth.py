import json

import cv2
import numpy as np
import pytest

from gasdb_tools.imaging import read_image
from gasdb_tools.synth import SynthRig, synthesize
from gasdb_tools.video import probe


def edge_strength(image):
    g = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 2.0)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


@pytest.mark.parametrize("seed", [1, 3])
def test_homography_maps_thermal_edges_onto_rgb_edges(seed):
    """Edge maps of RGB and of thermal warped by the true homography overlap best at the truth."""
    rig = SynthRig(seed=seed, distractors=False)
    w, h = rig.size
    thermal, _ = rig.thermal(0.0)  # before the leak
    rgb_edges = edge_strength(cv2.cvtColor(rig.rgb(rig.offset_s), cv2.COLOR_RGB2GRAY))
    valid = cv2.warpPerspective(np.ones_like(thermal), rig.homography, (w, h))
    valid = cv2.erode(valid, np.ones((15, 15), np.uint8)) > 0

    def edge_overlap(dx=0.0, dy=0.0):
        H = rig.homography.copy()
        H[0, 2] += dx
        H[1, 2] += dy
        warped = edge_strength(cv2.warpPerspective(thermal, H, (w, h)))
        return np.corrcoef(rgb_edges[valid], warped[valid])[0, 1]

    truth = edge_overlap()
    assert truth > 0.4
    for dx, dy in [(2, 0), (-2, 0), (0, 2), (0, -2)]:
        assert truth > edge_overlap(dx, dy) + 0.03
    assert truth > edge_overlap(6, 0) + 0.15
    # the identity (no registration) is far worse
    identity = edge_strength(thermal)
    assert truth > np.corrcoef(rgb_edges[valid], identity[valid])[0, 1] + 0.15


def test_masks_empty_before_leak_and_non_empty_after():
    rig = SynthRig(seed=5, size=(320, 256))
    for t in np.arange(0, rig.leak_start_s, 0.25):
        assert not rig.thermal(float(t))[1].any()
    for t in np.arange(rig.leak_start_s + 0.5, rig.leak_start_s + 3, 0.5):
        frame, mask = rig.thermal(float(t))
        assert mask.any()
        clean = SynthRig(seed=5, size=(320, 256))
        # the plume darkens the background where the mask says gas (absorbing polarity)
        bg, _ = clean.thermal(0.0)
        assert frame[mask].astype(float).mean() < bg[mask].astype(float).mean()


def test_deterministic_for_a_seed():
    a, b = SynthRig(seed=9, size=(160, 128)), SynthRig(seed=9, size=(160, 128))
    np.testing.assert_array_equal(a.thermal(2.0)[0], b.thermal(2.0)[0])
    np.testing.assert_array_equal(a.rgb(1.0), b.rgb(1.0))
    np.testing.assert_array_equal(a.homography, b.homography)
    assert not np.array_equal(SynthRig(seed=10, size=(160, 128)).homography, a.homography)


def test_bad_parameters():
    with pytest.raises(ValueError, match="polarity"):
        SynthRig(polarity="sideways")
    with pytest.raises(ValueError, match="at least 64x64"):
        SynthRig(size=(32, 32))


def test_synthesize_writes_videos_and_truth(tmp_path):
    listing = synthesize(tmp_path, recordings=2, seconds=1.5, seed=1, size=(160, 128))
    assert [r["id"] for r in listing] == ["synth01", "synth02"]
    for r in listing:
        d = tmp_path / r["dir"]
        truth = json.loads((d / "truth" / "truth.json").read_text())
        assert truth["rgb_fps"] != truth["thermal_fps"]
        assert probe(d / "thermal.mp4").fps == truth["thermal_fps"]
        assert probe(d / "rgb.mp4").frames_declared == truth["rgb_frames"]
        masks = sorted((d / "truth" / "masks").glob("*.png"))
        assert len(masks) == truth["thermal_frames"] == probe(d / "thermal.mp4").frames_declared
        first, last = read_image(masks[0]), read_image(masks[-1])
        assert set(np.unique(first)) <= {0} and set(np.unique(last)) == {0, 1}
        H = np.array(truth["homography_thermal_to_rgb"])
        assert H.shape == (3, 3) and abs(np.linalg.det(H[:2, :2]) - 1) < 0.1
    assert json.loads((tmp_path / "recordings.json").read_text())[0]["scene"] == "sunny"


def test_recordings_of_one_rig_share_its_homography(tmp_path):
    listing = synthesize(tmp_path, recordings=2, seconds=0.5, seed=4, size=(160, 128))
    h1, h2 = (np.array(r["truth"]["homography_thermal_to_rgb"]) for r in listing)
    np.testing.assert_array_equal(h1, h2)
    assert listing[0]["truth"]["seed"] != listing[1]["truth"]["seed"]  # different scenes and leaks
    with pytest.raises(ValueError, match="3x3"):
        SynthRig(size=(160, 128), rig_homography=np.eye(2))
