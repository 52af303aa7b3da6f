"""The scale applied to a file's features (`--feature-scale`): images as they usually come
(uint8 pixels 0-255, as Keras' `mnist.load_data` gives them) are scaled to [0, 1] by default, as
TFF's EMNIST pixels are; unscaled, a linear model trained with the tutorial's learning rate
diverges on them."""

from __future__ import annotations

import numpy as np

# Float features beyond this look unscaled (pixels as 0-255 floats, raw sensor readings).
_USUAL_RANGE = 10.0


def resolve(spec: str, x: np.ndarray) -> float | None:
    """The factor features are multiplied by on the workers; None for none at all."""
    if spec == "none":
        return None
    if spec != "auto":
        return float(spec)
    if x.dtype == np.uint8:
        return 1 / 255
    if np.issubdtype(x.dtype, np.integer):
        largest = float(np.max(np.abs(x))) if x.size else 0.0
        return 1 / largest if largest > 0 else None
    return None


def describe(x: np.ndarray, scale: float | None) -> str:
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    how = f"scaled by {scale:.6g}" if scale is not None else "not scaled"
    return f"features {x.dtype} in [{low:g}, {high:g}], {how}"


def looks_unscaled(x: np.ndarray, scale: float | None) -> bool:
    """Float features far outside the usual range that nothing scales."""
    return (
        scale is None
        and np.issubdtype(x.dtype, np.floating)
        and x.size > 0
        and float(np.max(np.abs(x))) > _USUAL_RANGE
    )
