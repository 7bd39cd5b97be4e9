"""PNGs written with ``deflate="isal"`` (our container around ISA-L's deflate): standard files, same pixels."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from gasdb_tools.imaging import decode_image, encode_png, read_image, write_image
from gasdb_tools.submission import decode_png_gray8

SHAPES = st.one_of(st.tuples(st.integers(1, 17), st.integers(1, 17)),
                   st.tuples(st.integers(1, 17), st.integers(1, 17), st.sampled_from([3, 4])))


def _chunks(data: bytes):
    """``[(type, payload)]`` of a PNG, checking the signature and every chunk's CRC on the way."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + n)
        assert crc == zlib.crc32(kind + payload), kind
        out.append((kind, payload))
        pos += 12 + n
    assert pos == len(data)
    return out


@settings(max_examples=60, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16]), SHAPES), st.sampled_from(["up", "none"]),
       st.integers(0, 9))
def test_isal_png_round_trip_keeps_values_channels_and_depth(image, png_filter, level):
    data = encode_png(image, compression=level, png_filter=png_filter, deflate="isal")
    back = decode_image(data)
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)


def test_isal_png_is_the_standard_layout_byte_for_byte():
    """IHDR fields, one IDAT holding the zlib stream of the rows, each led by filter byte 2 ("up")
    and holding each byte minus the byte above it modulo 256 (PNG spec, section 9.2); empty IEND."""
    image = np.array([[[1, 2, 3], [250, 0, 7]], [[0, 255, 3], [251, 1, 9]], [[5, 5, 5], [0, 0, 0]]], np.uint8)
    chunks = _chunks(encode_png(image, compression=1, png_filter="up", deflate="isal"))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (2, 3, 8, 2, 0, 0, 0)  # width, height, 8-bit RGB
    expected = bytes([2, 1, 2, 3, 250, 0, 7,
                      2, 255, 253, 0, 1, 1, 2,  # (0-1, 255-2, 3-3, 251-250, 1-0, 9-7) mod 256
                      2, 5, 6, 2, 5, 255, 247])
    assert zlib.decompress(chunks[1][1]) == expected
    assert chunks[2][1] == b""
    deep = _chunks(encode_png(np.array([[258, 65535]], np.uint16), compression=1, png_filter="none", deflate="isal"))
    assert struct.unpack(">IIBBBBB", deep[0][1]) == (2, 1, 16, 0, 0, 0, 0)
    assert zlib.decompress(deep[1][1]) == bytes([0, 1, 2, 255, 255])  # big-endian samples


@pytest.mark.parametrize("shape,dtype", [((6, 9), np.uint8), ((6, 9, 3), np.uint8), ((6, 9, 4), np.uint8),
                                         ((6, 9), np.uint16)])
def test_isal_png_reads_the_same_in_pillow(shape, dtype):
    image = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    data = encode_png(image, compression=1, deflate="isal")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))).astype(dtype), image)


def test_isal_gray_png_passes_the_strict_one_call_decoder():
    """The scoring's strict decoder (CRCs, one complete zlib stream with Adler-32, None/Sub/Up rows)
    takes our gray frames and reads the same pixels."""
    image = np.random.default_rng(3).integers(0, 256, (31, 45), np.uint8)
    for png_filter in ("up", "none"):
        back = decode_png_gray8(encode_png(image, compression=1, png_filter=png_filter, deflate="isal"))
        assert back is not None
        np.testing.assert_array_equal(back, image)


def test_isal_png_bgr_input_and_determinism(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (20, 30, 3), np.uint8)
    rgb = encode_png(image, compression=1, deflate="isal")
    assert encode_png(np.ascontiguousarray(image[..., ::-1]), compression=1, deflate="isal", channel_order="bgr") == rgb
    assert encode_png(image.copy(), compression=1, deflate="isal") == rgb  # the same bytes every time
    _, digest = write_image(tmp_path / "a.png", image, compression=1, deflate="isal", digest=True)
    assert (tmp_path / "a.png").read_bytes() == rgb
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)
    assert digest


def test_isal_png_refuses_what_it_cannot_write():
    image = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="deflate must be one of"):
        encode_png(image, deflate="lz4")
    with pytest.raises(ValueError, match="row filters"):
        encode_png(image, deflate="isal", png_filter="paeth")
    with pytest.raises(ValueError, match="strategy='rle' is zlib's"):
        encode_png(image, deflate="isal", strategy="rle")
    with pytest.raises(ValueError, match="zlib level 0-9"):
        encode_png(image, deflate="isal", compression=12)
    with pytest.raises(TypeError, match="uint8 or uint16"):
        encode_png(image.astype(np.float32), deflate="isal")
