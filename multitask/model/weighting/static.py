"""Static weighting: Σ spec.weight × L_k (the base class as it is)."""
from .base import Weighting


class Static(Weighting):
    """Σ spec.weight × L_k."""
