"""How much a result counts when it was trained from a server model `s` versions old (FedBuff's
s(tau); FedScale's async aggregator uses the same 1/sqrt(1+s))."""

from __future__ import annotations

import math
from collections.abc import Callable


def staleness_weighting(spec: str) -> Callable[[int], float]:
    """'sqrt': 1/sqrt(1+s); 'constant': 1; 'polynomial:A': (1+s)^-A with A >= 0."""
    if spec == "sqrt":
        return lambda staleness: 1.0 / math.sqrt(1.0 + staleness)
    if spec == "constant":
        return lambda staleness: 1.0
    name, _, exponent = spec.partition(":")
    if name == "polynomial":
        try:
            power = float(exponent)
        except ValueError:
            power = -1.0
        if power >= 0 and math.isfinite(power):
            return lambda staleness: (1.0 + staleness) ** -power
    raise ValueError(
        f"staleness_weight must be sqrt, constant or polynomial:A with A >= 0 (e.g. polynomial:0.5); "
        f"got {spec!r}"
    )
