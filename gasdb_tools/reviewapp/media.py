"""The pictures the review app serves for a pair, made on demand from the workspace's files and cached.

Every file read is named by the index (``pairs.csv``), never by request text. Generated pictures
(thumbnails, stretched thermal views, mask and boundary layers) are cached under
``WS/.gasdb-cache/review/img/<rec>/`` with a key made of the provenance digests of their inputs
(``extract_digest``, ``align_digest``, ``enhance_digest``), the document's exact bytes, its review
status and the recording's contrast stretch: when any input changes, the key changes and the picture
is made again (older versions of it are deleted).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from gasdb_tools import labelme_format, views
from gasdb_tools.errors import FormatError, GasdbError, WorkspaceError
from gasdb_tools.fsutil import atomic_write_bytes
from gasdb_tools.imaging import encode_png, read_image
from gasdb_tools.provenance import digest
from gasdb_tools.review import DocState, document_state, label_path, raw_digest
from gasdb_tools.workspace import Index, Workspace, is_thermal_only

from gasdb_tools import pictures

__all__ = ["KINDS", "THUMB_WIDTH", "Media"]

#: Pictures of a pair: ``thumb`` (gallery), ``rgb``, ``thermal`` (the annotation frame: aligned, or the
#: camera's for a thermal camera alone), ``camera`` (the thermal camera's own frame), ``enhanced``,
#: ``mask`` and ``boundary`` (RGBA layers in the annotation frame).
KINDS = ("thumb", "rgb", "thermal", "camera", "enhanced", "mask", "boundary")
THUMB_WIDTH = 224
_VERSION = 1
_CACHE = Path(".gasdb-cache") / "review" / "img"


class Media:
    """Makes and caches the pictures of a workspace's pairs (thread-safe)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._stretches: dict = {}
        self._lock = threading.Lock()

    # -- helpers -------------------------------------------------------------------------
    def _stretch(self, index: Index, rec_id: str) -> views.Stretch:
        rec = index.recordings[rec_id]
        rows = [r for r in index.pairs_of(rec_id) if r.get("thermal")]
        samples = views.sample_rows(rows)
        key = (rec_id, rec.get("view_stretch", ""),
               tuple(views.source_digest(p, views.source_kind(rec, p)) or p["pair_id"] for p in samples))
        with self._lock:
            hit = self._stretches.get(rec_id)
        if hit and hit[0] == key:
            return hit[1]
        stretch, _ = views.recording_stretch(self.ws, rec, rows)  # read-only: the columns are not stored
        with self._lock:
            self._stretches[rec_id] = (key, stretch)
        return stretch

    def _thermal_view(self, index: Index, pair: dict, kind: str) -> np.ndarray:
        frame, _ = views.read_source(self.ws, pair, kind)
        return views.apply_stretch(frame, self._stretch(index, pair["recording"]))

    def _doc(self, pair: dict):
        """``(document or None, its bytes, its DocState or None)``, read from the pair's LabelMe file now."""
        path = label_path(self.ws, pair)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None, b"", None
        try:
            doc = labelme_format.loads(data, file=path)
        except FormatError as exc:
            return None, data, DocState(pair_id=pair["pair_id"], path=str(path), exists=True, status="edited",
                                        error=exc.message)
        return doc, data, document_state(doc, pair_id=pair["pair_id"], path=str(path))

    def _mask(self, doc, path) -> np.ndarray | None:
        if doc is None:
            return None
        try:
            return labelme_format.rasterize(doc, file=path)
        except GasdbError:
            return None

    def _cached(self, pair: dict, kind: str, key: str, ext: str, make):
        folder = self.ws.root / _CACHE / pair["recording"]
        path = folder / f"{pair['pair_id']}.{kind}.{key[:20]}.{ext}"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        data = make()
        try:
            for old in folder.glob(f"{pair['pair_id']}.{kind}.*.{ext}"):
                old.unlink(missing_ok=True)
            atomic_write_bytes(path, data, sync=False)
        except OSError:  # a read-only workspace: serve without caching
            pass
        return data

    def _source_key(self, index: Index, pair: dict, kind: str) -> list:
        rec = index.recordings[pair["recording"]]
        if kind == "enhanced":
            return ["enhanced", pair.get("enhanced", ""), pair.get("enhance_digest", "")]
        if kind == "rgb":
            return ["rgb", pair.get("rgb", ""), pair.get("extract_digest", "")]
        src = views.source_kind(rec, pair) if kind == "thermal" else "thermal"
        return [src, pair.get(src, ""), views.source_digest(pair, src),
                self._stretch(index, pair["recording"]).to_dict()]

    def _base_kind(self, index: Index, pair: dict) -> str:
        if pair.get("enhanced") and self.ws.path(pair["enhanced"]).is_file():
            return "enhanced"
        if pair.get("thermal"):
            return "thermal"
        return "rgb"

    def _base(self, index: Index, pair: dict, kind: str) -> np.ndarray:
        if kind in ("thermal", "camera"):
            return self._thermal_view(index, pair, "thermal" if kind == "camera" else
                                      views.source_kind(index.recordings[pair["recording"]], pair))
        rel = pair.get(kind) or ""
        if not rel:
            raise WorkspaceError(f"pair {pair['pair_id']} has no {kind} frame", file=self.ws.root / self.ws.PAIRS,
                                 field=f"{pair['pair_id']}.{kind}",
                                 fix={"rgb": "rerun `gasdb extract`", "enhanced": "run `gasdb enhance`"}[kind])
        return read_image(self.ws.path(rel))

    # -- pictures ------------------------------------------------------------------------
    def available(self, index: Index, pair: dict) -> list[str]:
        """The view kinds this pair has files for (in display order)."""
        rec = index.recordings[pair["recording"]]
        out = []
        if pair.get("rgb") and not is_thermal_only(rec):
            out.append("rgb")
        if pair.get("thermal"):
            out.append("thermal")
            if views.source_kind(rec, pair) == "aligned":
                out.append("camera")
        if pair.get("enhanced"):
            out.append("enhanced")
        return out

    def picture(self, index: Index, pair: dict, kind: str) -> tuple[bytes, str]:
        """``(bytes, mimetype)`` of one picture of ``pair`` (see :data:`KINDS`).

        Raises
        ------
        GasdbError
            The pair lacks what the picture is made from (the message says which stage makes it).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown picture kind {kind!r}")
        if kind == "thumb":
            return self._thumb(index, pair), "image/jpeg"
        if kind in ("rgb", "enhanced"):  # 8-bit files people can look at as they are: served unchanged
            rel = pair.get(kind) or ""
            if rel and self.ws.path(rel).suffix.lower() == ".png":
                try:
                    data = self.ws.path(rel).read_bytes()
                    if len(data) > 25 and data[24] == 8:  # IHDR bit depth
                        return data, "image/png"
                except FileNotFoundError:
                    raise FormatError("image file not found", file=self.ws.path(rel),
                                      fix=f"rerun the stage that writes {kind} frames") from None
        if kind in ("rgb", "enhanced", "thermal", "camera"):
            key = digest("review-img", _VERSION, kind, self._source_key(index, pair, kind))
            data = self._cached(pair, kind, key, "jpg",
                                lambda: pictures.encode_jpeg(pictures.as_rgb8(self._base(index, pair, kind)), quality=92))
            return data, "image/jpeg"
        if kind == "mask":
            doc, raw, state = self._doc(pair)
            status = state.status if state is not None else ""
            key = digest("review-img", _VERSION, kind, raw_digest(raw or None), status)

            def make():
                mask = self._mask(doc, state.path if state else None)
                if mask is None:
                    mask = np.zeros((1, 1), np.uint8)
                colour = pictures.STATUS_COLOURS.get(status, pictures.STATUS_COLOURS["pending"])
                return encode_png(pictures.mask_rgba(mask, colour=colour), compression=1)

            return self._cached(pair, kind, key, "png", make), "image/png"
        # boundary
        key = digest("review-img", _VERSION, kind, pair.get("valid", ""), pair.get("align_digest", ""))

        def make_boundary():
            rel = pair.get("valid") or ""
            if not rel or not self.ws.path(rel).is_file():
                return encode_png(np.zeros((1, 1, 4), np.uint8))
            return encode_png(pictures.boundary_rgba(read_image(self.ws.path(rel), mode="gray"), thickness=2),
                              compression=1)

        return self._cached(pair, kind, key, "png", make_boundary), "image/png"

    def _thumb(self, index: Index, pair: dict) -> bytes:
        base_kind = self._base_kind(index, pair)
        doc, raw, state = self._doc(pair)
        status = state.status if state is not None else ""
        key = digest("review-thumb", _VERSION, THUMB_WIDTH, self._source_key(index, pair, base_kind),
                     raw_digest(raw or None), status)

        def make():
            base = pictures.as_rgb8(self._base(index, pair, base_kind))
            mask = self._mask(doc, state.path if state else None)
            small = pictures.resize_to_width(base, THUMB_WIDTH)
            if mask is not None:
                m = pictures.resize_to_width(mask, THUMB_WIDTH, nearest=True)
                if m.shape[:2] != small.shape[:2]:
                    m = pictures.fit_mask(m, small.shape)
                colour = pictures.STATUS_COLOURS.get(status, pictures.STATUS_COLOURS["pending"])
                small = pictures.overlay(small, m, colour=colour, alpha=0.55)
            return pictures.encode_jpeg(small, quality=82)

        return self._cached(pair, "thumb", key, "jpg", make)

    def label_file(self, index: Index, pair: dict) -> Path:
        """The pair's LabelMe document path (from the index)."""
        return label_path(self.ws, pair)
