"""Targetless RGB-thermal registration: align the edges both cameras see.

A fixed two-camera rig without a heated calibration target can still be calibrated, because the
outlines of ordinary objects (buildings, poles, vehicles, the horizon) show in both modalities,
with unrelated intensities and often opposite polarity. This package estimates the transform that
maps **thermal pixel coordinates to RGB pixel coordinates** (a 3x3 float64 matrix) from such
edges, following HeatNet's idea of targetless calibration [1]_ and the measurements in
``docs/methods.md`` section B. One module per concern:

``features``
    Modality-independent edge features (:func:`edge_features`: blur, gradient magnitude over its
    99th percentile, clipped, square root) and their pyramids; the solver aligns the strength
    times the doubled-angle gradient direction, so edges only match edges of the same direction.
``coarse``
    Global search on a ~160 px level: a rotation x scale grid around the start, each candidate's
    shift by Hanning-windowed phase correlation [3]_, the best 8 re-checked one level finer and
    the best 3 refined (multi-start), so start errors of tens of pixels and degrees converge.
``refine``
    Levenberg-Marquardt maximisation of the enhanced correlation coefficient (ECC) [2]_ [4]_ on
    the feature pyramid with valid-pixel masks on both sides, over one or many frames sharing one
    transform; a homography's weakly determined perspective part gets a prior scaled by the data.
``selection``
    Model choice by held-out error (:func:`select_model`): every model fitted with recordings or
    quadrants of the view left out, the simplest within one standard error of the best kept.
``pair``, ``rig``
    One pair (:func:`register_pair`) and a rig's many pairs (:func:`register_pairs`: per-frame
    estimates, the median of their projected corners, a joint refinement, the model choice, QA and
    a consistency flag calibrated on real aligned pairs).
``recording``
    A small, regularised update of the rig matrix for one recording (:func:`refine_recording`),
    which absorbs that recording's depth plane.
``distortion``
    Optional radial distortion of the thermal lens (:class:`RadialDistortion`,
    :func:`estimate_distortion`).
``residuals``, ``warping``, ``geometry``
    Block residuals (:func:`block_residuals`), :func:`warp_thermal`, corners and model fitting.

Measured (``benchmarks/bench_registration.py``, see ``benchmarks/README.md``): exact truth (the rig
simulator, 640x512) about 0.2 px; 40 real RoadScene pairs with random known similarity warps at
default settings 1.7 px median mean corner error, and the estimate does not depend on the warp
(the warped pair's estimate composed with the warp against the unwarped pair's: 0.3 px median).

Every function takes arrays and returns arrays or small immutable records; nothing here reads
files or prints. Problems with the data (a black or featureless frame, images of the wrong size,
a search that does not converge) raise :class:`gasdb_tools.errors.CalibrationError`, never a
silently wrong matrix.

References
----------
.. [1] J. Vertens, J. Zuern, W. Burgard, "HeatNet: Bridging the day-night domain gap in semantic
   segmentation with thermal images", IEEE/RSJ IROS 2020.
.. [2] G. D. Evangelidis, E. Z. Psarakis, "Parametric image alignment using enhanced correlation
   coefficient maximization", IEEE TPAMI 30(10):1858-1865, 2008.
   https://doi.org/10.1109/TPAMI.2008.113
.. [3] C. D. Kuglin, D. C. Hines, "The phase correlation image alignment method", Proc. IEEE
   Int. Conf. on Cybernetics and Society, 1975, pp. 163-165.
.. [4] S. Baker, I. Matthews, "Lucas-Kanade 20 years on: a unifying framework", IJCV 56(3):221-255,
   2004. https://doi.org/10.1023/B:VISI.0000011205.11775.fd
"""

from __future__ import annotations

from gasdb_tools.registration.distortion import DistortionEstimate, RadialDistortion, estimate_distortion
from gasdb_tools.registration.features import FEATURES, edge_features, feature_correlation
from gasdb_tools.registration.geometry import (MODEL_CHOICES, MODELS, corner_error, default_initial, fit_model,
                                               image_corners, transform_points)
from gasdb_tools.registration.pair import Registration, register_pair
from gasdb_tools.registration.recording import RecordingRefinement, refine_recording
from gasdb_tools.registration.residuals import block_residuals
from gasdb_tools.registration.rig import FrameResidual, RigRegistration, register_pairs
from gasdb_tools.registration.selection import ModelChoice, select_model
from gasdb_tools.registration.warping import warp_thermal

__all__ = [
    "MODELS",
    "MODEL_CHOICES",
    "FEATURES",
    "Registration",
    "FrameResidual",
    "RigRegistration",
    "ModelChoice",
    "RecordingRefinement",
    "register_pair",
    "register_pairs",
    "select_model",
    "refine_recording",
    "RadialDistortion",
    "DistortionEstimate",
    "estimate_distortion",
    "edge_features",
    "warp_thermal",
    "corner_error",
    "transform_points",
    "image_corners",
    "fit_model",
    "default_initial",
    "block_residuals",
    "feature_correlation",
]
