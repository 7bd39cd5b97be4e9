"""Pictures of a pair for people: mask overlays, the valid-pixel boundary, thumbnails, sample panels.

Pure functions on arrays (no workspace, no web server), shared by the review app (``gasdb review``)
and the release page (``index.html``): :func:`render_sample_panel` renders the HTML panel (RGB,
thermal, overlay side by side) with the same template (``panel.html``) the app's pair view
includes, from arrays or image files, without a running server.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from gasdb_tools.imaging import encode_png, read_image, to_gray, to_uint8
from gasdb_tools.labelme_format import IGNORE_INDEX

__all__ = [
    "STATUS_COLOURS",
    "IGNORE_COLOUR",
    "BOUNDARY_COLOUR",
    "as_rgb8",
    "overlay",
    "fit_mask",
    "mask_rgba",
    "boundary_rgba",
    "resize_to_width",
    "encode_jpeg",
    "template_environment",
    "render_sample_panel",
    "panel_css",
]

#: Mask colour per review status (RGB): drafts orange, edited cyan, approved green.
STATUS_COLOURS = {"pending": (255, 150, 0), "edited": (0, 190, 255), "approved": (40, 215, 90)}
#: Colour of ``__ignore__`` pixels (value 255).
IGNORE_COLOUR = (120, 120, 255)
#: Colour of the boundary of the aligned thermal's valid pixels.
BOUNDARY_COLOUR = (255, 235, 0)


def as_rgb8(image: np.ndarray, *, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Any gray/RGB(A) uint8/uint16/float image -> H×W×3 uint8 (a 16-bit frame needs ``lo``/``hi``, or
    is stretched to its own 0.5-99.5 percentiles)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        if lo is None and image.dtype == np.uint16:
            lo, hi = (float(v) for v in np.percentile(image, (0.5, 99.5)))
            hi = hi if hi > lo else lo + 1.0
        image = to_uint8(image, lo=lo, hi=hi) if lo is not None else to_uint8(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def fit_mask(mask: np.ndarray, shape) -> np.ndarray:
    """A class-index mask resized (nearest) to ``shape``'s height and width, unchanged when it fits."""
    if mask.shape[:2] == tuple(shape[:2]):
        return mask
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def overlay(base: np.ndarray, mask: np.ndarray, *, colour=STATUS_COLOURS["edited"], alpha: float = 0.5,
            ignore_colour=IGNORE_COLOUR) -> np.ndarray:
    """``base`` (any image, see :func:`as_rgb8`) with gas pixels (``mask == 1``) tinted ``colour`` and
    ignored pixels (255) ``ignore_colour``; a mask of another size is resized (nearest) to ``base``.

    >>> out = overlay(np.zeros((2, 2), np.uint8), np.array([[1, 0], [0, 255]], np.uint8), alpha=1.0)
    >>> out[0, 0].tolist(), out[0, 1].tolist(), out[1, 1].tolist()
    ([0, 190, 255], [0, 0, 0], [120, 120, 255])
    """
    out = as_rgb8(base).copy()
    mask = fit_mask(np.asarray(mask), out.shape)
    for value, col in ((1, colour), (IGNORE_INDEX, ignore_colour)):
        sel = mask == value
        if sel.any():
            tint = np.asarray(col, np.float32)
            out[sel] = np.clip((1 - alpha) * out[sel] + alpha * tint + 0.5, 0, 255).astype(np.uint8)
    return out


def mask_rgba(mask: np.ndarray, *, colour=STATUS_COLOURS["edited"], ignore_colour=IGNORE_COLOUR,
              outline: bool = True) -> np.ndarray:
    """An RGBA layer of a class mask: gas ``colour``, ignore ``ignore_colour``, transparent elsewhere;
    with ``outline`` the gas region's edge is drawn opaque white-on-colour so a faint plume stays visible
    at any opacity."""
    mask = np.asarray(mask)
    out = np.zeros((*mask.shape[:2], 4), np.uint8)
    gas, ign = mask == 1, mask == IGNORE_INDEX
    out[gas] = (*colour, 255)
    out[ign] = (*ignore_colour, 255)
    if outline and gas.any():
        edge = gas & ~cv2.erode(gas.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out[edge] = (255, 255, 255, 255)
    return out


def boundary_rgba(valid: np.ndarray, *, colour=BOUNDARY_COLOUR, thickness: int = 1) -> np.ndarray:
    """An RGBA layer with the outline of the valid-pixel region (``valid`` truthy), transparent elsewhere."""
    valid = (np.asarray(valid) > 0).astype(np.uint8)
    out = np.zeros((*valid.shape[:2], 4), np.uint8)
    contours, _ = cv2.findContours(valid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    layer = np.zeros(valid.shape[:2], np.uint8)
    cv2.drawContours(layer, contours, -1, 255, thickness=max(1, int(thickness)))
    out[layer > 0] = (*colour, 255)
    return out


def resize_to_width(image: np.ndarray, width: int, *, nearest: bool = False) -> np.ndarray:
    """``image`` shrunk to ``width`` pixels wide (aspect kept); narrower images are returned unchanged."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    size = (int(width), max(1, int(round(h * width / w))))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, *, quality: int = 85) -> bytes:
    """Encode an H×W×3 RGB (or gray) uint8 image as JPEG bytes."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails here on absurd input
        raise ValueError("OpenCV could not encode the image as JPEG")
    return buf.tobytes()


_ENV = None


def template_environment():
    """The Jinja2 environment of the shipped page templates (autoescaping on): the review app's, shared
    with the release page."""
    global _ENV
    if _ENV is None:
        import jinja2

        from gasdb_tools.resources import page_templates

        _ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(page_templates())),
                                  autoescape=jinja2.select_autoescape(default=True, default_for_string=True))
    return _ENV


def _load(image):
    if isinstance(image, (str, Path)):
        return read_image(image)
    return np.asarray(image)


def _data_uri(image: np.ndarray, *, png: bool) -> str:
    data = encode_png(image) if png else encode_jpeg(image, quality=88)
    return f"data:image/{'png' if png else 'jpeg'};base64," + base64.b64encode(data).decode("ascii")


def render_sample_panel(rgb=None, thermal=None, mask=None, *, title: str = "", caption: str = "",
                        width: int = 320, status: str = "edited", thermal_label: str = "thermal",
                        thermal_range: tuple[float, float] | None = None, out_dir=None,
                        name: str = "sample", store: Callable[[str, bytes], str] | None = None) -> str:
    """HTML of one sample panel: RGB, thermal and the mask over the thermal view, side by side.

    The same template (``templates/panel.html``) lays out the views of the review app's pair view.

    Parameters
    ----------
    rgb, thermal : ndarray or path, optional
        The RGB frame and the thermal frame (gray, 8- or 16-bit) as arrays or image files; a view
        that is None is left out.
    mask : ndarray or path, optional
        Class mask (0 background, 1 gas, 255 ignore), drawn over the thermal view (over RGB when
        there is no thermal) in the colour of ``status`` (:data:`STATUS_COLOURS`).
    title, caption : str
        Shown above and below the views (escaped).
    width : int
        Images are shrunk to this width.
    thermal_range : (lo, hi), optional
        Stretch of a 16-bit thermal frame (e.g. the recording's :func:`gasdb_tools.views.recording_stretch`);
        default its own 0.5-99.5 percentiles.
    out_dir : path, optional
        Write the images there as ``<name>_rgb.jpg``, ``<name>_thermal.jpg``, ``<name>_overlay.png``
        and link them by file name (relative to the page, so put the page in ``out_dir`` or prefix
        the names yourself); default: embed them as ``data:`` URIs (a self-contained page).
    name : str
        File-name stem for ``out_dir`` and ``store`` (letters, digits, ``_``, ``-``).
    store : callable, optional
        ``store(file_name, data) -> src``: keeps an image's bytes somewhere (a release's file writer)
        and returns the ``src`` to link it by; overrides ``out_dir``.

    Returns
    -------
    str
        An HTML fragment (``<figure class="gasdb-panel">``) styled by ``static/panel.css``, whose
        rules :func:`panel_css` also returns for a page without the app's stylesheet.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"name must be letters, digits, '_' and '-' (a file-name stem), got {name!r}")
    views = []
    rgb_img = None if rgb is None else resize_to_width(as_rgb8(_load(rgb)), width)
    th_img = None
    if thermal is not None:
        lo, hi = thermal_range if thermal_range is not None else (None, None)
        th_img = resize_to_width(as_rgb8(to_gray(_load(thermal)), lo=lo, hi=hi), width)
    if rgb_img is not None:
        views.append(("rgb", "RGB", rgb_img, False))
    if th_img is not None:
        views.append(("thermal", thermal_label, th_img, False))
    if mask is not None:
        m = _load(mask)
        base = th_img if th_img is not None else rgb_img
        if base is None:
            raise ValueError("a mask needs an RGB or a thermal view to be drawn over")
        gas = float(np.mean(np.asarray(m) == 1) * 100)
        views.append(("overlay", f"mask ({gas:.1f} % gas)",
                      overlay(base, m, colour=STATUS_COLOURS.get(status, STATUS_COLOURS["edited"])), True))
    items = []
    for key, label, img, png in views:
        fname = f"{name}_{key}.{'png' if png else 'jpg'}"
        if store is not None:
            src = store(fname, encode_png(img) if png else encode_jpeg(img, quality=88))
        elif out_dir is not None:
            from gasdb_tools.fsutil import atomic_write_bytes

            atomic_write_bytes(Path(out_dir) / fname, encode_png(img) if png else encode_jpeg(img, quality=88))
            src = fname
        else:
            src = _data_uri(img, png=png)
        items.append({"src": src, "label": label, "alt": f"{title} {label}".strip(),
                      "width": img.shape[1], "height": img.shape[0]})
    return template_environment().get_template("panel.html").render(views=items, title=title, caption=caption)


def panel_css() -> str:
    """The stylesheet rules of a sample panel (the review app's ``panel.css``), to inline into a static page."""
    from gasdb_tools.resources import page_stylesheet

    return page_stylesheet("panel.css")

