"""Fine-grained static saliency and RSFNet's modality-confidence pseudo-labels (NumPy + OpenCV core).

RSFNet [1]_ supervises one confidence score per modality with a pseudo-label: the IoU between the
Otsu-binarised fine-grained saliency map of that modality's image and the binary ground truth.
The authors compute the saliency with OpenCV contrib's ``StaticSaliencyFineGrained``, which
``opencv-python-headless`` does not ship; :func:`fine_grained_saliency` is an equivalent written
from the algorithm of Montabone and Soto [2]_ as OpenCV implements it:

1. gray (OpenCV luma weights), Gaussian 3×3 blur twice;
2. for each surround half-size ``n`` in (12, 24, 48, 28, 56, 112): the mean of the box of rows and
   columns ``[y - n + 1, y + n]`` (clipped to the image) **without the centre pixel**, from one
   integral image; "on" = ``max(gray - mean, 0)``, "off" = ``max(mean - gray, 0)``, truncated to
   8 bits;
3. on and off maps summed over the scales, each scaled to 0-255 by its own maximum (truncated);
4. ``saliency = (on + off) / max(max(on), max(off))`` (OpenCV writes ``255 ·`` that into a uint8,
   which overflows where ``on + off`` exceeds the maximum; here it saturates at 1).

The result is float32 in [0, 1] (OpenCV's ``computeSaliency`` output, 8-bit steps). A constant
image has zero saliency everywhere.

References
----------
.. [1] P. Li et al., "Residual spatial fusion network for RGB-thermal semantic segmentation",
   Neurocomputing 2024, arXiv:2306.10364.
.. [2] S. Montabone, A. Soto, "Human detection using a mobile platform and novel features derived
   from a visual saliency mechanism", Image and Vision Computing 28(3), 2010,
   doi:10.1016/j.imavis.2009.06.006; OpenCV contrib ``saliency/src/staticSaliencyFineGrained.cpp``.
"""

from __future__ import annotations

import cv2
import numpy as np

from gasdb_tools.imaging import to_gray, to_uint8

__all__ = ["fine_grained_saliency", "otsu_mask", "mask_iou", "confidence_targets", "NEIGHBOURHOODS"]

#: Surround half-sizes of the six scales (OpenCV's ``neighborhoods``).
NEIGHBOURHOODS = (12, 24, 48, 28, 56, 112)


def _gray_u8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a gray or RGB image, got shape {image.shape}")
    return to_uint8(to_gray(image))


def _surround_mean(integral: np.ndarray, gray: np.ndarray, n: int) -> np.ndarray:
    h, w = gray.shape
    ys = np.arange(h)
    xs = np.arange(w)
    y1, y2 = np.clip(ys - n + 1, 0, h), np.clip(ys + n + 1, 0, h)
    x1, x2 = np.clip(xs - n + 1, 0, w), np.clip(xs + n + 1, 0, w)
    box = (integral[y2[:, None], x2[None, :]] + integral[y1[:, None], x1[None, :]]
           - integral[y2[:, None], x1[None, :]] - integral[y1[:, None], x2[None, :]])
    area = (y2 - y1)[:, None] * (x2 - x1)[None, :]
    return ((box - gray).astype(np.float32) / (area - 1).astype(np.float32))


def fine_grained_saliency(image: np.ndarray) -> np.ndarray:
    """Montabone–Soto fine-grained saliency of a gray or RGB image (see the module docstring).

    Parameters
    ----------
    image : (H, W) or (H, W, 3) array
        uint8, uint16 or float in [0, 1] (converted to 8-bit gray first).

    Returns
    -------
    (H, W) float32 array in [0, 1]

    Examples
    --------
    >>> img = np.zeros((64, 64), np.uint8); img[24:40, 24:40] = 200
    >>> s = fine_grained_saliency(img)
    >>> bool(s[32, 32] > s[4, 4])
    True
    """
    gray = _gray_u8(image)
    if min(gray.shape) < 2:
        raise ValueError(f"the image must be at least 2x2, got {gray.shape}")
    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    gray = cv2.GaussianBlur(gray, (3, 3), 0)
    integral = cv2.integral(gray, sdepth=cv2.CV_64F)
    g = gray.astype(np.float32)
    on_sum = np.zeros(gray.shape, np.int32)
    off_sum = np.zeros(gray.shape, np.int32)
    for n in NEIGHBOURHOODS:
        mean = _surround_mean(integral, gray, n)
        on_sum += np.maximum(g - mean, 0).astype(np.int32)  # truncation, as OpenCV's (uchar) cast
        off_sum += np.maximum(mean - g, 0).astype(np.int32)

    def to_255(v: np.ndarray) -> np.ndarray:
        top = int(v.max())
        if top == 0:
            return np.zeros(v.shape, np.int32)
        return (255.0 * (v.astype(np.float32) / np.float32(top))).astype(np.int32)

    on, off = to_255(on_sum), to_255(off_sum)
    top = max(int(on.max()), int(off.max()))
    if top == 0:
        return np.zeros(gray.shape, np.float32)
    sal = np.minimum((255.0 * (on + off).astype(np.float32) / np.float32(top)).astype(np.int32), 255)
    return sal.astype(np.float32) / np.float32(255)


def otsu_mask(saliency: np.ndarray) -> np.ndarray:
    """Binarise a [0, 1] saliency map with Otsu's threshold on its 8-bit values (OpenCV's THRESH_OTSU)."""
    u8 = to_uint8(np.clip(np.asarray(saliency, np.float32), 0.0, 1.0))
    _t, binary = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return binary > 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (they agree)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def confidence_targets(rgb: np.ndarray, thermal: np.ndarray, label: np.ndarray, *,
                       ignore_index: int | None = 255) -> tuple[float, float]:
    """RSFNet's pseudo-labels ``(iou_rgb, iou_thermal)`` for one sample.

    Each is the IoU between the Otsu-binarised :func:`fine_grained_saliency` map of that modality
    and the binary ground truth ``label > 0`` (``ignore_index`` pixels count as background).

    Parameters
    ----------
    rgb : (H, W, 3) array
    thermal : (H, W) array
    label : (H, W) integer array
        Class indices (any non-zero class is foreground).
    """
    label = np.asarray(label)
    fg = label > 0
    if ignore_index is not None:
        fg &= label != ignore_index
    if np.asarray(rgb).shape[:2] != fg.shape or np.asarray(thermal).shape[:2] != fg.shape:
        raise ValueError(f"rgb {np.asarray(rgb).shape[:2]}, thermal {np.asarray(thermal).shape[:2]} and label "
                         f"{fg.shape} sizes differ")
    return (mask_iou(otsu_mask(fine_grained_saliency(rgb)), fg),
            mask_iou(otsu_mask(fine_grained_saliency(thermal)), fg))
