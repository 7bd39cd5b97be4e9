import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gasdb_tools.errors import FormatError
from gasdb_tools.imaging import decode_image, read_image, to_float01, to_gray, to_uint8, write_image


@settings(max_examples=30, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16]), st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_gray_png_round_trip_keeps_values_and_bit_depth(tmp_path_factory, image):
    path = tmp_path_factory.mktemp("img") / "a.png"
    write_image(path, image)
    back = read_image(path)
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_png_round_trip_is_rgb_ordered(tmp_path, channels):
    image = np.zeros((4, 5, channels), np.uint8)
    image[..., 0] = 200  # red
    image[..., 1] = 10
    if channels == 4:
        image[..., 3] = 77  # thermal in the alpha slot (Gas-DB layout)
    write_image(tmp_path / "c.png", image)
    back = read_image(tmp_path / "c.png")
    np.testing.assert_array_equal(back, image)
    assert read_image(tmp_path / "c.png", mode="rgb").shape == (4, 5, 3)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FormatError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\xff\xd8 this is not an image")
    with pytest.raises(FormatError, match="bad.png: cannot decode"):
        read_image(bad)
    with pytest.raises(FormatError):
        decode_image(b"")


def test_write_refuses_lossy_names_and_float_pixels(tmp_path):
    with pytest.raises(ValueError, match="lossless PNG"):
        write_image(tmp_path / "a.jpg", np.zeros((2, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8 or uint16"):
        write_image(tmp_path / "a.png", np.zeros((2, 2), np.float32))


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_image(tmp_path / "a.png", np.ones((3, 3), np.uint8))
    write_image(tmp_path / "a.png", np.full((3, 3), 2, np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert read_image(tmp_path / "a.png").max() == 2


def test_dtype_helpers():
    assert to_uint8(np.array([0, 65535, 32768], np.uint16)).tolist() == [0, 255, 128]
    assert to_uint8(np.array([0.0, 0.5, 1.2])).tolist() == [0, 128, 255]
    assert to_uint8(np.array([10, 20, 30], np.uint16), lo=10, hi=30).tolist() == [0, 128, 255]
    np.testing.assert_allclose(to_float01(np.array([0, 255], np.uint8)), [0, 1])
    assert to_gray(np.zeros((2, 2, 3), np.uint8)).shape == (2, 2)
    with pytest.raises(ValueError, match="lo < hi"):
        to_uint8(np.zeros(3), lo=1, hi=1)
