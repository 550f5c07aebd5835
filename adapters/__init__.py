"""Partner-region adapters: decode, verify and translate the 14 partners' health codes.

``detect(text)`` finds a code's region by prefix; ``ADAPTERS[region].decode(...)`` runs the fixed
decode -> verify -> translate entry point of :mod:`adapters.base`.
"""

from adapters.base import CanonicalStatus, Colour, RegionAdapter, RegionSpec, VerifiedCode
from adapters.regions import ADAPTERS, REGION_SPECS, detect

__all__ = [
    "ADAPTERS",
    "REGION_SPECS",
    "CanonicalStatus",
    "Colour",
    "RegionAdapter",
    "RegionSpec",
    "VerifiedCode",
    "detect",
]
