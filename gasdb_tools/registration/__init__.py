"""Targetless RGB-thermal registration: align the edges both cameras see.

A fixed two-camera rig without a heated calibration target can still be calibrated, because the
outlines of ordinary objects (buildings, poles, vehicles, the horizon) show in both modalities,
with unrelated intensities and often opposite polarity. This module estimates the transform that
maps **thermal pixel coordinates to RGB pixel coordinates** (a 3x3 float64 matrix) from such
edges, following HeatNet's idea of targetless calibration [1]_ and the measurements in
``docs/methods.md`` section B:

1. **Features** (:func:`edge_features`): Gaussian blur, gradient magnitude, divided by its 99th
   percentile, clipped to 1, square root: polarity-free and insensitive to the intensity mapping.
   The fine solver aligns two channels, that strength times the doubled-angle gradient direction
   (``f cos 2theta``, ``f sin 2theta``), so edges only match edges of the same direction.
2. **Coarse global search**: on a ~160 px pyramid level, a grid of rotations x scales around the
   nominal transform, the translation of each candidate by Hanning-windowed phase correlation
   [3]_ (smoothed peak, sub-pixel), scored by masked normalised cross-correlation (NCC); the best
   8 are re-checked one level finer, so start errors of tens of pixels and several degrees
   converge.
3. **Fine, coarse to fine**: forward-additive Lucas-Kanade [4]_ (Levenberg-Marquardt) on the
   feature pyramid maximising the enhanced correlation coefficient (ECC) [2]_ with valid-pixel masks on both sides (per channel the
   photometric gain and bias are solved in closed form and projected out of the Jacobian, so the
   least-squares cost is ``|t|^2 (1 - rho^2)``), with a line search along the Gauss-Newton step
   (large cross-modal residuals make plain Gauss-Newton under-step). Affine on the coarse levels,
   the requested model on the finest; a homography's perspective part gets a weak prior, scaled
   by the data's own residual, because cross-modal edges barely determine it.
4. **Many frames of one rig** (:func:`register_pairs`): per-frame estimates, the **median of the
   projected corners**, then a joint refinement of one transform over all frames (one gain and
   bias per frame), with per-frame and per-block residuals and a flag when they disagree
   (parallax, a camera that moved).

Measured (``benchmarks/bench_registration.py``): exact truth (the rig simulator, 640x512) 0.17 px
median corner error for single pairs, 0.2 px from 20 pairs; 40 real RoadScene pairs with random
known warps 2.4 px median, 6.4 px max (raw-intensity ECC: 23 px median); about 0.3 s per 640x512
pair on 2 shared cores.

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
