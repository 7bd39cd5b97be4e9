"""gasdb_tools.submission: every malformed or hostile submission is rejected, by name, writing nothing."""

from __future__ import annotations

import io
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gasdb_tools.submission as submission_module
from conftest import shared_data
from gasdb_tools.errors import SubmissionError
from gasdb_tools.imaging import encode_png, write_image
from gasdb_tools.scoring import score
from gasdb_tools.submission import (InvalidSubmissionError, SubmissionLimits, decode_mask, decode_png_bits,
                                    decode_png_gray8, open_submission, pack_bits, png_header)

SHAPE = (24, 32)  # (H, W)
IDS = ["00001", "00002", "00003"]


def _mask(seed: int = 0, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < 0.3).astype(np.uint8)


def _pil_png(array: np.ndarray, mode: str, palette=None) -> bytes:
    from PIL import Image

    im = Image.fromarray(array)
    if mode == "1":
        im = Image.fromarray(array.astype(bool))
    elif mode == "P":
        im = im.convert("P")
        im.putpalette(palette or [0, 0, 0, 64, 0, 128])
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- one mask


def test_png_header_reads_ihdr():
    data = encode_png(np.zeros((7, 9), np.uint16))
    assert png_header(data) == (7, 9, 16, 0)
    assert png_header(encode_png(np.zeros((3, 4, 3), np.uint8))) == (3, 4, 8, 2)
    with pytest.raises(ValueError, match="a JPEG"):
        png_header(cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes())
    with pytest.raises(ValueError, match="no IHDR"):
        png_header(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)


def test_decode_accepts_L_1bit_and_palette_indices():
    m = _mask(1)
    assert np.array_equal(decode_mask(encode_png(m), shape=SHAPE), m)
    assert np.array_equal(decode_mask(_pil_png(m, "1"), shape=SHAPE), m)
    # Palette: the indices are the classes, whatever the colours (gas drawn as (64, 0, 128)).
    pal = _pil_png(m, "P", palette=[0, 0, 0, 64, 0, 128])
    assert png_header(pal)[3] == 3
    assert np.array_equal(decode_mask(pal, shape=SHAPE), m)
    assert np.array_equal(decode_mask(encode_png(m * 255), shape=SHAPE, binary_255=True), m)
    assert np.array_equal(decode_mask(encode_png(m * 0), shape=SHAPE, binary_255=True), m * 0)


@pytest.mark.parametrize("make, pattern", [
    (lambda m: encode_png(m.astype(np.uint16)), "16-bit PNG"),
    (lambda m: encode_png(np.dstack([m] * 3)), r"multi-channel mask \(RGB PNG\)"),
    (lambda m: encode_png(np.dstack([m] * 4)), r"multi-channel mask \(RGBA PNG\)"),
    (lambda m: encode_png(np.zeros((1, 1), np.uint8)), r"wrong size 1x1 \(width x height\); the ground truth is 32x24"),
    (lambda m: encode_png(m[:, :-1]), "wrong size 31x24"),
    (lambda m: cv2.imencode(".jpg", m * 255)[1].tobytes(), r"unreadable mask: a JPEG \(no PNG signature\)"),
    (lambda m: b"", "not a PNG"),
    (lambda m: encode_png(m)[:60], "corrupt or truncated"),
    (lambda m: encode_png(m * 255), r"values \{255\} outside \{0, 1\}"),
    (lambda m: encode_png((m + 2 * (m == 0)).astype(np.uint8)), r"values \{2\} outside \{0, 1\}"),
])
def test_decode_rejects_with_a_message_naming_the_file(make, pattern):
    data = make(_mask(2))
    with pytest.raises(SubmissionError, match=pattern) as info:
        decode_mask(data, shape=SHAPE, name="sub/00001.png")
    assert info.value.file == "sub/00001.png"
    assert str(info.value).startswith("sub/00001.png: ")
    assert info.value.fix


def test_decode_gray_alpha_and_binary_255_mistakes():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.dstack([_mask(3) * 255, np.full(SHAPE, 255, np.uint8)]), "LA").save(buf, "PNG")
    with pytest.raises(SubmissionError, match=r"grayscale\+alpha"):
        decode_mask(buf.getvalue(), shape=SHAPE)
    with pytest.raises(SubmissionError, match=r"values \{1\} outside \{0, 255\} \(--binary-255\)"):
        decode_mask(encode_png(_mask(3)), shape=SHAPE, binary_255=True)


def test_real_labelme_palette_png_reports_its_indices_not_colours():
    voc = shared_data("labelme_examples", "instance_segmentation", "data_dataset_voc", "SegmentationClass")
    from PIL import Image

    path = sorted(voc.glob("*.png"))[0]
    data = path.read_bytes()
    indices = np.unique(np.asarray(Image.open(path)))
    assert png_header(data)[3] == 3  # a real palette PNG written by LabelMe's converter
    with pytest.raises(SubmissionError) as info:
        decode_mask(data, shape=png_header(data)[:2], name=path.name)
    bad = ", ".join(str(v) for v in indices if v > 1)
    assert f"values {{{bad}}} outside {{0, 1}}" in str(info.value)


# --------------------------------------------------------------------------- containers


def _write_folder(root: Path, ids=IDS, **extra: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, id_ in enumerate(ids):
        write_image(root / f"{id_}.png", _mask(k))
    for name, data in extra.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _write_zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"target")
            else:
                zf.writestr(name, data)
    return path


def test_folder_extra_files_warn_and_junk_is_ignored(tmp_path):
    sub = open_submission(_write_folder(tmp_path / "sub", **{"notes.txt": b"x", "99999.png": b"x",
                                                             ".DS_Store": b"x", "Thumbs.db": b"x"}), ids=IDS)
    assert sub.errors == [] and sub.kind == "folder"
    assert sorted(sub.files) == IDS
    assert len(sub.warnings) == 1 and "2 extra files ignored" in sub.warnings[0]
    assert "99999.png" in sub.warnings[0] and "notes.txt" in sub.warnings[0]
    assert np.array_equal(decode_mask(sub.read("00002"), shape=SHAPE), _mask(1))


def test_missing_and_duplicate_ids_are_errors(tmp_path):
    folder = _write_folder(tmp_path / "sub", ids=IDS[:2], **{"00001.PNG": encode_png(_mask(0))})
    sub = open_submission(folder, ids=IDS)
    messages = sorted(str(e) for e in sub.errors)
    assert any("duplicate mask for id '00001': 00001.PNG, 00001.png" in m for m in messages)
    assert any(m.startswith(str(folder / "00003.png")) and "missing mask for id '00003'" in m for m in messages)
    assert sub.missing == ["00003"]
    lenient = open_submission(folder, ids=IDS, allow_missing=True)
    assert not any("missing" in e.message for e in lenient.errors)
    assert any("missing mask(s) scored as all background" in w for w in lenient.warnings)


def test_zip_one_top_level_folder_is_stripped_and_macosx_ignored(tmp_path):
    members = {f"preds/{i}.png": encode_png(_mask(k)) for k, i in enumerate(IDS)}
    members.update({"__MACOSX/preds/._00001.png": b"junk", "preds/.hidden.png": b"junk"})
    with open_submission(_write_zip(tmp_path / "s.zip", members), ids=IDS) as sub:
        assert sub.errors == [] and sub.warnings == []
        assert sub.files == {i: f"preds/{i}.png" for i in IDS}
        assert np.array_equal(decode_mask(sub.read("00003"), shape=SHAPE), _mask(2))
        assert sub.display_name("00003") == "s.zip:preds/00003.png"
        assert len(sub.archive_sha256) == 64


def test_zip_same_id_in_two_places_and_nesting(tmp_path):
    members = {f"{i}.png": encode_png(_mask(k)) for k, i in enumerate(IDS)}
    members["dir/00002.png"] = encode_png(_mask(5))
    members["a/b/00009.png"] = encode_png(_mask(5))
    sub = open_submission(_write_zip(tmp_path / "s.zip", members), ids=IDS + ["00009"])
    text = "\n".join(str(e) for e in sub.errors)
    assert "duplicate mask for id '00002': 00002.png, dir/00002.png" in text
    assert "s.zip:a/b/00009.png: mask inside a nested folder" in text


def test_not_a_zip_or_missing(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(SubmissionError, match="not a readable zip file"):
        open_submission(tmp_path / "x.zip", ids=IDS)
    with pytest.raises(SubmissionError, match="submission not found"):
        open_submission(tmp_path / "nope", ids=IDS)


# --------------------------------------------------------------------------- hostile uploads, end to end


@pytest.fixture
def release(tmp_path):
    """A 3-image release: gasdb/labels/<name>.png, gasdb/test.txt, index.csv."""
    root = tmp_path / "release"
    for k, id_ in enumerate(IDS):
        write_image(root / "gasdb" / "labels" / f"{id_}.png", _mask(k))
    (root / "gasdb" / "test.txt").write_text("".join(f"{i}\n" for i in IDS))
    (root / "index.csv").write_text("name,pair_id,recording,scene,split\n"
                                    + "".join(f"{i},r1_{i},r1,sunny,test\n" for i in IDS))
    return root


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if not p.is_dir()}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run from tmp/work with a private temp dir; yields a check that nothing was written anywhere."""
    work = tmp_path / "work"
    work.mkdir()
    private_tmp = tmp_path / "tmpdir"
    private_tmp.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    yield tmp_path


def _good_members():
    return {f"{i}.png": encode_png(_mask(k)) for k, i in enumerate(IDS)}


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


HOSTILE = {
    "zip slip": ({"../../evil.png": encode_png(_mask(9))},
                 r"s\.zip:\.\./\.\./evil\.png: unsafe member: path traversal"),
    "absolute path": ({"/tmp/evil.png": encode_png(_mask(9))}, r"s\.zip:/tmp/evil\.png: unsafe member: absolute path"),
    "windows slip": ({"..\\evil.png": encode_png(_mask(9))}, r"unsafe member: path traversal"),
    "symlink": ({"link.png": _symlink_info("link.png")}, r"s\.zip:link\.png: unsafe member: symlink"),
    "1-pixel png": ({"00002.png": encode_png(np.zeros((1, 1), np.uint8))}, r"s\.zip:00002\.png: wrong size 1x1"),
    "16-bit png": ({"00002.png": encode_png(_mask(1).astype(np.uint16))}, r"s\.zip:00002\.png: 16-bit PNG"),
    "jpeg renamed": ({"00002.png": cv2.imencode(".jpg", _mask(1) * 255)[1].tobytes()},
                     r"s\.zip:00002\.png: unreadable mask: a JPEG \(no PNG signature\)"),
    "zip bomb": ({"bomb.png": bytes(20 << 20)}, r"s\.zip:bomb\.png: compression ratio \d+:1 above the cap"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_zip_is_rejected_by_name_and_writes_nothing(case, release, sandbox):
    extra, pattern = HOSTILE[case]
    members = {**_good_members(), **extra}
    sub_zip = _write_zip(sandbox / "s.zip", members)
    before = _tree(sandbox)
    with pytest.raises(InvalidSubmissionError, match=pattern) as info:
        score(release, sub_zip)
    assert _tree(sandbox) == before
    assert not list((sandbox / "tmpdir").iterdir())
    for outside in (sandbox / "evil.png", sandbox.parent / "evil.png", Path("/tmp/evil.png")):
        assert not outside.exists()
    assert info.value.report["valid"] is False
    assert all(e["file"].startswith("s.zip:") for e in info.value.report["errors"])


def _patch_central_size(path: Path, member: str, size: int) -> None:
    """Forge the uncompressed size a zip's central directory declares for ``member``."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack("<H", data[at + 28:at + 30])[0]
        if data[at + 46:at + 46 + name_len].decode() == member:
            data[at + 24:at + 28] = struct.pack("<I", size)
            break
        at = data.index(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_zip_declaring_gigabytes_is_rejected_before_decompressing(release, sandbox):
    sub_zip = _write_zip(sandbox / "s.zip", _good_members())
    _patch_central_size(sub_zip, "00002.png", 0xFFFFFFF0)
    before = _tree(sandbox)
    with pytest.raises(SubmissionError, match=r"declares \d+ uncompressed bytes, more than the cap .* \(zip bomb\?\)"):
        score(release, sub_zip)
    assert _tree(sandbox) == before


def test_zip_member_lying_about_its_size_fails_its_crc(release, sandbox):
    sub_zip = _write_zip(sandbox / "s.zip", _good_members())
    _patch_central_size(sub_zip, "00002.png", 40)
    with pytest.raises(InvalidSubmissionError, match=r"s\.zip:00002\.png: unreadable"):
        score(release, sub_zip)


def test_ten_thousand_members_are_rejected_from_the_directory(release, sandbox):
    path = sandbox / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for k in range(10_000):
            zf.writestr(f"m{k:05d}.png", b"")
    before = _tree(sandbox)
    with pytest.raises(SubmissionError, match=r"zip has 10000 members, more than the cap of 130"):
        score(release, path)
    assert _tree(sandbox) == before
    # An end record lying about the count does not help: the directory's size gives it away.
    data = bytearray(path.read_bytes())
    at = data.rindex(b"PK\x05\x06")
    data[at + 8:at + 12] = struct.pack("<HH", 3, 3)
    path.write_bytes(bytes(data))
    with pytest.raises(SubmissionError, match=r"central directory of \d+ bytes is too large for 130 members"):
        score(release, path)
    # The hard cap applies however many ids there are.
    with pytest.raises(SubmissionError, match="more than the cap of 5000"):
        open_submission(path, ids=[str(i) for i in range(2000)], limits=SubmissionLimits(hard_max_members=5000))


def test_folder_symlinks_are_errors_and_not_followed(release, sandbox):
    folder = _write_folder(sandbox / "sub", ids=IDS[:2])
    secret = sandbox / "secret.png"
    write_image(secret, _mask(2))
    os.symlink(secret, folder / "00003.png")
    with pytest.raises(InvalidSubmissionError) as info:
        score(release, folder)
    text = str(info.value)
    assert f"{folder / '00003.png'}: symlink (not followed)" in text
    assert "missing mask for id '00003'" in text


def test_folder_member_cap(tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    for k in range(40):
        (folder / f"{k}.txt").write_bytes(b"")
    with pytest.raises(SubmissionError, match="more than 30 entries"):
        open_submission(folder, ids=IDS, limits=SubmissionLimits(max_members=30))


def test_every_problem_is_collected_then_reported_once(release, tmp_path):
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "00001.png").write_bytes(encode_png(_mask(0).astype(np.uint16)))
    (folder / "00002.png").write_bytes(encode_png(np.dstack([_mask(1)] * 3)))
    (folder / "extra.png").write_bytes(b"")
    with pytest.raises(InvalidSubmissionError) as info:
        score(release, folder)
    err = info.value
    assert [Path(e.file).name for e in err.errors] == ["00001.png", "00002.png", "00003.png"]
    assert [e.message.split(" ")[0] for e in err.errors] == ["16-bit", "multi-channel", "missing"]
    assert "invalid submission: 3 problems" in str(err)
    assert err.warnings and "extra.png" in err.warnings[0]


# --------------------------------------------------------------------------- the fast PNG path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _filtered_rows(image: np.ndarray, filters) -> bytes:
    """PNG specification 1.2 (section 6) row filters (1 byte per pixel), written out here independently of any library."""
    out, prev = [], np.zeros(image.shape[1], np.int32)
    for row, kind in zip(image.astype(np.int32), filters):
        a = np.concatenate([[0], row[:-1]])  # left
        c = np.concatenate([[0], prev[:-1]])  # up-left
        b = prev
        if kind == 0:
            d = row
        elif kind == 1:
            d = row - a
        elif kind == 2:
            d = row - b
        elif kind == 3:
            d = row - (a + b) // 2
        else:
            pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
            d = row - np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        out.append(bytes([kind]) + (d % 256).astype(np.uint8).tobytes())
        prev = row
    return b"".join(out)


def _hand_png(image: np.ndarray, filters, *, level: int = 6, split_idat: int = 0, interlace: int = 0,
              before_idat: bytes = b"", trailing: bytes = b"") -> bytes:
    h, w = image.shape
    stream = zlib.compress(_filtered_rows(image, filters), level)
    parts = [stream[k:k + split_idat] for k in range(0, len(stream), split_idat)] if split_idat else [stream]
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, interlace))
            + before_idat + b"".join(_chunk(b"IDAT", p) for p in parts) + _chunk(b"IEND", b"") + trailing)


def _opencv(data: bytes):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.fixture(params=["zlib", "libdeflate"])
def inflater(request, monkeypatch):
    """Run the test with each inflate back end (libdeflate only where the deflate package is installed)."""
    if request.param == "libdeflate":
        monkeypatch.setattr(submission_module, "_libdeflate", pytest.importorskip("deflate"))
    else:
        monkeypatch.setattr(submission_module, "_libdeflate", None)
    return request.param


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 40), seed=st.integers(0, 2**31), binary=st.booleans(),
       level=st.integers(0, 9), split=st.sampled_from([0, 1, 7]))
def test_fast_path_pixels_equal_libpng_for_any_mix_of_none_sub_up_rows(inflater, h, w, seed, binary, level, split):
    rng = np.random.default_rng(seed)
    image = (rng.random((h, w)) < rng.random()).astype(np.uint8) if binary else \
        rng.integers(0, 256, (h, w), dtype=np.uint8)
    filters = rng.integers(0, 3, h)  # restarts of the column sums at every None or Sub row
    data = _hand_png(image, filters, level=level, split_idat=split)
    fast = decode_png_gray8(data)
    assert fast is not None, "a plain None/Sub/Up PNG must take the fast path"
    assert fast.dtype == np.uint8 and fast.shape == (h, w)
    assert np.array_equal(fast, _opencv(data))
    assert np.array_equal(fast, image)


@pytest.mark.parametrize("png_filter", ["none", "sub", "up", "avg", "paeth", "all"])
def test_fast_path_matches_opencv_on_the_encoders_users_have(inflater, png_filter):
    m = _mask(5, (37, 53))
    for data in (encode_png(m, png_filter=png_filter, compression=1), encode_png(m * 200, png_filter=png_filter)):
        fast = decode_png_gray8(data)
        if png_filter in ("none", "sub", "up"):
            assert fast is not None
        if fast is not None:
            assert np.array_equal(fast, _opencv(data))
    # OpenCV's own default (Sub rows) and Pillow's adaptive filters (Paeth rows: left to libpng)
    assert np.array_equal(decode_png_gray8(cv2.imencode(".png", m)[1].tobytes()), m)
    assert np.array_equal(decode_mask(_pil_png(m, "L"), shape=m.shape), m)


def _pixels(kind: str, rng, shape) -> np.ndarray:
    """Test images: two-valued masks, a mask with ignore (255) pixels, one stray value, any bytes."""
    mask = (rng.random(shape) < rng.random()).astype(np.uint8)
    if kind == "0/1":
        return mask
    if kind == "0/255":
        return mask * 255
    if kind == "0/1/255":
        return np.where(rng.random(shape) < 0.2, 255, mask).astype(np.uint8)
    if kind == "one stray value":
        mask[rng.integers(shape[0]), rng.integers(shape[1])] = rng.integers(2, 255)
        return mask
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _check_bits(data: bytes, *, may_take: bool) -> int:
    """decode_png_bits of ``data`` for both values of ``on``: exactly libpng's pixels where it answers,
    and an answer exactly where the rows are None/Up and the pixels two-valued (``may_take``). Returns
    how many of the two it answered."""
    pixels = _opencv(data)
    answered = 0
    for on in (1, 255):
        bits = decode_png_bits(data, on=on)
        takes = may_take and set(np.unique(pixels).tolist()) <= {0, on}
        if not takes:
            assert bits is None, on
            continue
        assert bits is not None, on
        assert np.array_equal(bits, pack_bits(pixels == on))
        h, w = pixels.shape
        assert bits.shape == (h, 8 * -(-(w + 1) // 64)) and bits.dtype == np.uint8
        assert np.array_equal(np.unpackbits(bits, axis=1, count=w + 1), np.c_[np.zeros(h, np.uint8), pixels == on])
        answered += 1
    return answered


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 70), seed=st.integers(0, 2**31),
       kind=st.sampled_from(["0/1", "0/255", "0/1/255", "one stray value", "any bytes"]),
       filters=st.sampled_from(["none/up", "up", "any of the five"]), level=st.integers(0, 9),
       split=st.sampled_from([0, 1, 7]))
def test_bit_path_is_exact_for_every_filter_type_and_value_set(inflater, h, w, seed, kind, filters, level, split):
    """PNGs written row by row with chosen filters (all five types, zlib): the bits are libpng's pixels
    == on whenever decode_png_bits answers, and it answers for every None/Up two-valued image."""
    rng = np.random.default_rng(seed)
    image = _pixels(kind, rng, (h, w))
    rows = {"none/up": rng.choice([0, 2], h), "up": np.full(h, 2), "any of the five": rng.integers(0, 5, h)}[filters]
    data = _hand_png(image, rows, level=level, split_idat=split)
    assert np.array_equal(_opencv(data), image)
    _check_bits(data, may_take=set(rows.tolist()) <= {0, 2})


@pytest.mark.parametrize("strategy", ["default", "filtered", "huffman", "rle"])
@pytest.mark.parametrize("png_filter", ["none", "sub", "up", "avg", "paeth", "all"])
def test_bit_path_matches_opencv_on_a_real_encoders_files(inflater, png_filter, strategy):
    """libpng (through OpenCV) writing each filter type and zlib strategy: the bit path answers for
    None and Up rows, and where it answers its bits are OpenCV's pixels."""
    rng = np.random.default_rng(11)
    for shape in ((37, 53), (5, 8), (1, 1), (64, 63)):
        for kind in ("0/1", "0/255", "0/1/255", "one stray value"):
            image = _pixels(kind, rng, shape)
            data = encode_png(image, png_filter=png_filter, strategy=strategy, compression=int(rng.integers(0, 10)))
            kinds = _row_filters(data)
            if png_filter in ("none", "up"):  # libpng may write None rows where Up is asked (the first row)
                assert kinds <= {0, 2}
            answered = _check_bits(data, may_take=kinds <= {0, 2})
            if png_filter in ("none", "up") and kind in ("0/1", "0/255"):
                assert answered >= 1


def _row_filters(data: bytes) -> set:
    """The filter types a PNG's rows use (read with zlib, independently of the decoder under test)."""
    h, w = png_header(data)[:2]
    pos, stream = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            stream += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return set(zlib.decompress(stream)[::w + 1])


def test_packed_decode_mask_is_the_packed_mask_for_every_writer(inflater):
    m = _mask(12, (29, 45))
    writers = {"ours (Up)": encode_png(m), "OpenCV default (Sub)": cv2.imencode(".png", m)[1].tobytes(),
               "Pillow (adaptive, Paeth)": _pil_png(m, "L"), "None rows": encode_png(m, png_filter="none"),
               "palette": _pil_png(m, "P"), "1-bit": _pil_png(m, "1")}
    for name, data in writers.items():
        assert np.array_equal(decode_mask(data, shape=m.shape, packed=True), pack_bits(m)), name
    for binary_255 in (False, True):
        data = encode_png(m * (255 if binary_255 else 1))
        assert np.array_equal(decode_mask(data, shape=m.shape, binary_255=binary_255, packed=True), pack_bits(m))
    bad = m.copy()
    bad[3, 4] = 7
    for data in (encode_png(bad), encode_png(m * 255)):  # a value outside {0, 1}: the same error either way
        with pytest.raises(SubmissionError, match="outside") as packed_error:
            decode_mask(data, shape=m.shape, name="x.png", packed=True)
        with pytest.raises(SubmissionError, match="outside") as whole_error:
            decode_mask(data, shape=m.shape, name="x.png")
        assert str(packed_error.value) == str(whole_error.value)


def _corrupt(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def test_anything_unusual_is_left_to_libpng_and_scored_alike(inflater):
    m = _mask(6)
    good = _hand_png(m, [2] * SHAPE[0])
    idat_crc = good.index(b"IEND") - 8  # last byte of the IDAT CRC
    cases = {
        "Average rows": _hand_png(m, [3] * SHAPE[0]),
        "Paeth rows": _hand_png(m, [4] * SHAPE[0]),
        "ancillary chunk": _hand_png(m, [2] * SHAPE[0], before_idat=_chunk(b"tEXt", b"k\x00v")),
        "unknown critical chunk": _hand_png(m, [2] * SHAPE[0], before_idat=_chunk(b"ABCD", b"")),
        "bytes after IEND": _hand_png(m, [2] * SHAPE[0], trailing=b"\x00"),
        "interlaced": _hand_png(m, [2] * SHAPE[0], interlace=1),
        "bad IDAT CRC": _corrupt(good, idat_crc),
        "bad IHDR CRC": _corrupt(good, 32),
        "truncated": good[:-20],
        "bad filter type": _hand_png(m, [5] * SHAPE[0]),
        "bad Adler-32": _bad_adler(m),
        "stream too short": _short_stream(m),
    }
    for name, data in cases.items():
        assert decode_png_gray8(data) is None, name
        try:  # the verdict and pixels are libpng's, as before the fast path existed
            expected = _opencv(data)
        except cv2.error:
            expected = None
        if expected is None:
            with pytest.raises(SubmissionError, match="corrupt or truncated"):
                decode_mask(data, shape=SHAPE, name="x.png")
        else:
            assert np.array_equal(decode_mask(data, shape=SHAPE, name="x.png"), expected), name


def _bad_adler(m: np.ndarray) -> bytes:
    stream = bytearray(zlib.compress(_filtered_rows(m, [2] * m.shape[0])))
    stream[-1] ^= 0xFF
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", m.shape[1], m.shape[0], 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", bytes(stream)) + _chunk(b"IEND", b""))


def _short_stream(m: np.ndarray) -> bytes:
    rows = _filtered_rows(m, [0] * m.shape[0])[:-(m.shape[1] + 1)]  # one row missing
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", m.shape[1], m.shape[0], 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def test_a_small_png_inflating_to_gigabytes_is_not_inflated(inflater):
    import tracemalloc

    bomb = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(bytes(200 << 20), 9)) + _chunk(b"IEND", b""))
    tracemalloc.start()
    try:
        assert decode_png_gray8(bomb) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # at most the 20 bytes the header declares (+ 1), never the 200 MB


def test_decoding_into_a_reused_buffer(inflater):
    m = _mask(7)
    data = encode_png(m)
    buffer = np.full(SHAPE, 9, np.uint8)
    out = decode_png_gray8(data, out=buffer)
    assert out is buffer and np.array_equal(buffer, m)
    out = decode_mask(data, shape=SHAPE, out=buffer)  # submitted masks take the fast path with libdeflate only
    assert np.array_equal(out, m) and (out is buffer) == (inflater == "libdeflate")
    other = np.zeros((SHAPE[0], SHAPE[1] + 1), np.uint8)  # wrong shape: a new array, the buffer untouched
    out = decode_png_gray8(data, out=other)
    assert out is not other and np.array_equal(out, m) and not other.any()


def test_folder_file_over_the_size_cap_is_an_error(tmp_path):
    folder = _write_folder(tmp_path / "sub")
    (folder / f"{IDS[0]}.png").write_bytes(encode_png(_mask(0)) + bytes(5000))
    with open_submission(folder, ids=IDS, limits=SubmissionLimits(max_member_bytes=4000)) as sub:
        assert len(sub.read(IDS[1])) < 4000
        with pytest.raises(SubmissionError, match="file larger than 4000 bytes"):
            sub.read(IDS[0])


def test_idat_oddities_that_libpng_accepts_decode_alike(inflater):
    m = _mask(8)
    h, w = m.shape
    stream = zlib.compress(_filtered_rows(m, [2] * h))

    def png(*idats: bytes) -> bytes:
        return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + b"".join(_chunk(b"IDAT", c) for c in idats) + _chunk(b"IEND", b""))

    for data in (png(stream + b"\x00\x01\x02"), png(stream, b""), png(stream, b"junk"), png(b"", stream)):
        expected = _opencv(data)  # libpng: at most a warning
        assert expected is not None and np.array_equal(expected, m)
        assert np.array_equal(decode_png_gray8(data), expected)
