"""Gas-DB / RT-CAN layout: written files read back the way RT-CAN's MF_dataset reads them."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data
from gasdb_tools import gasdb_layout as gl
from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import read_image, write_image


# A loader written the way RT-CAN's util/MF_dataset.py reads the folder (the MFNet/RTFNet
# convention, docs/formats.md §3): readlines() on both lists, a split line is kept when it is not
# in the blacklist's lines (terminators included), PIL opens images/<name>.png (4 channels) and
# labels/<name>.png (class indices), the image is resized with PIL's default filter and the label
# with NEAREST to 640x512.
class RTCANStyleDataset:
    def __init__(self, data_dir, split, input_h=512, input_w=640):
        from PIL import Image

        self.Image = Image
        with open(Path(data_dir) / f"{split}.txt") as f:
            lines = f.readlines()
        with open(Path(data_dir) / "blacklist.txt") as f:
            black = f.readlines()
        self.names = [line.strip() for line in lines if line not in black]
        self.data_dir, self.h, self.w = Path(data_dir), input_h, input_w

    def __len__(self):
        return len(self.names)

    def read(self, name, folder):
        with self.Image.open(self.data_dir / folder / f"{name}.png") as im:
            return im.copy()

    def __getitem__(self, i):
        name = self.names[i]
        image, label = self.read(name, "images"), self.read(name, "labels")
        image = np.asarray(image.resize((self.w, self.h)), dtype=np.float32).transpose((2, 0, 1)) / 255
        label = np.asarray(label.resize((self.w, self.h), resample=self.Image.NEAREST), dtype=np.int64)
        return image, label, name


def _sample(rng, h=512, w=640):
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    thermal = rng.integers(0, 256, (h, w), dtype=np.uint8)
    label = np.zeros((h, w), np.uint8)
    label[100:200, 300:420] = 1
    return rgb, thermal, label


def test_names_are_five_digits():
    assert gl.format_name(665) == "00665" and gl.format_name(0) == "00000"
    for bad in (-1, 100000, 1.0, True, "12"):
        with pytest.raises(ValueError):
            gl.format_name(bad)
    assert gl.check_name("00665") == "00665"
    for bad in ("665", "00665 ", "0066a", "00665\n"):
        with pytest.raises(ValueError):
            gl.check_name(bad)


def test_written_sample_reads_back_like_rtcan_at_640x512(tmp_path):
    rng = np.random.default_rng(1)
    rgb, thermal, label = _sample(rng)
    gl.write_sample(tmp_path, "00001", rgb, thermal, label)
    gl.write_layout_lists(tmp_path, {"train": ["00001"], "test": []}, [])
    from PIL import Image

    with Image.open(tmp_path / "images" / "00001.png") as im:
        assert im.mode == "RGBA" and im.size == (640, 512)
    with Image.open(tmp_path / "labels" / "00001.png") as im:
        assert im.mode == "L"
    ds = RTCANStyleDataset(tmp_path, "train")
    image, lab, name = ds[0]
    assert name == "00001" and image.shape == (4, 512, 640)
    # at native size PIL's resize is an exact copy: thermal really sits in channel 3
    np.testing.assert_array_equal(np.rint(image[:3] * 255).astype(np.uint8).transpose(1, 2, 0), rgb)
    np.testing.assert_array_equal(np.rint(image[3] * 255).astype(np.uint8), thermal)
    np.testing.assert_array_equal(lab, label.astype(np.int64))
    assert set(np.unique(lab).tolist()) == {0, 1}
    r, t, lab2 = gl.read_sample(tmp_path, "00001")
    np.testing.assert_array_equal(r, rgb)
    np.testing.assert_array_equal(t, thermal)
    np.testing.assert_array_equal(lab2, label)


def test_lists_end_every_line_with_newline_so_rtcan_excludes_blacklist(tmp_path):
    gl.write_layout_lists(tmp_path, {"train": ["00003", "00001", "00002"], "test": ["00004"]}, ["00002", "00004"])
    assert (tmp_path / "train.txt").read_bytes() == b"00001\n00002\n00003\n"
    assert (tmp_path / "blacklist.txt").read_bytes() == b"00002\n00004\n"
    assert RTCANStyleDataset(tmp_path, "train").names == ["00001", "00003"]
    assert RTCANStyleDataset(tmp_path, "test").names == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gl.read_split(tmp_path, "train") == ["00001", "00003"]
    gl.write_layout_lists(tmp_path / "empty", {"train": []}, [])
    assert (tmp_path / "empty" / "blacklist.txt").read_bytes() == b""  # must exist even when empty


def test_reader_strips_and_warns_where_rtcan_would_not_exclude(tmp_path):
    (tmp_path / "train.txt").write_text("00001\n00002 \n00003\n")
    (tmp_path / "blacklist.txt").write_text("00002\n00003")  # no final newline
    assert RTCANStyleDataset(tmp_path, "train").names == ["00001", "00002", "00003"]  # the bug
    with pytest.warns(gl.BlacklistNewlineWarning, match="00002, 00003"):
        assert gl.read_split(tmp_path, "train") == ["00001"]
    (tmp_path / "test.txt").write_text("00001\r\n00002\r\n")  # CRLF: text mode normalises it
    (tmp_path / "blacklist.txt").write_text("00002\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gl.read_split(tmp_path, "test") == ["00001"]
    with pytest.raises(FormatError, match="not found"):
        gl.read_split(tmp_path, "val")


def test_reader_tolerates_0_255_labels_and_separate_files(tmp_path):
    rng = np.random.default_rng(2)
    rgb, thermal, label = _sample(rng, 24, 32)
    write_image(tmp_path / "rgb" / "00007.png", rgb)
    write_image(tmp_path / "thermal" / "00007.png", thermal)
    write_image(tmp_path / "labels" / "00007.png", label * 255)  # CGNet-style 0/255
    r, t, lab = gl.read_sample(tmp_path, "00007")
    np.testing.assert_array_equal(r, rgb)
    np.testing.assert_array_equal(t, thermal)
    np.testing.assert_array_equal(lab, label)
    assert gl.list_samples(tmp_path) == ["00007"]
    write_image(tmp_path / "labels" / "00008.png", label)
    with pytest.raises(FormatError, match="no image"):
        gl.read_sample(tmp_path, "00008")


def test_writer_rejects_bad_arrays(tmp_path):
    rng = np.random.default_rng(3)
    rgb, thermal, label = _sample(rng, 8, 10)
    with pytest.raises(ValueError, match="to_uint8"):
        gl.write_sample(tmp_path, "00001", rgb, thermal.astype(np.uint16), label)
    with pytest.raises(ValueError, match="size"):
        gl.write_sample(tmp_path, "00001", rgb, thermal, label[:4])
    with pytest.raises(ValueError, match="5 digits"):
        gl.write_sample(tmp_path, "1", rgb, thermal, label)
    with pytest.raises(ValueError, match="uint8"):
        gl.write_sample(tmp_path, "00001", rgb, thermal, label.astype(np.int64))
    write_image(tmp_path / "images" / "00002.png", rgb)  # 3 channels where 4 are expected
    write_image(tmp_path / "labels" / "00002.png", label)
    with pytest.raises(FormatError, match="4-channel"):
        gl.read_sample(tmp_path, "00002")


@pytest.mark.realdata
def test_real_mfnet_frames_round_trip_through_the_layout(tmp_path):
    from PIL import Image

    for k, path in enumerate(sorted(shared_data("mfnet").glob("*.png")), start=1):
        rgba = read_image(path)
        assert rgba.shape[2] == 4
        label = (rgba[:, :, 3] > 128).astype(np.uint8)  # any class-index image will do
        name = gl.format_name(k)
        gl.write_sample(tmp_path, name, rgba[:, :, :3], rgba[:, :, 3], label)
        with Image.open(path) as ref, Image.open(tmp_path / "images" / f"{name}.png") as ours:
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
        r, t, lab = gl.read_sample(tmp_path, name)
        np.testing.assert_array_equal(np.dstack([r, t]), rgba)
        np.testing.assert_array_equal(lab, label)
