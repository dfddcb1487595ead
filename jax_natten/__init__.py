"""jax_natten: neighborhood attention for JAX with NATTEN's exact semantics."""

from jax_natten.backends import Explanation
from jax_natten.functional import (
    explain,
    na1d,
    na1d_av,
    na1d_qk,
    na2d,
    na2d_av,
    na2d_qk,
    na3d,
    na3d_av,
    na3d_qk,
    neighborhood_attention,
)
from jax_natten.neighborhood import Neighborhood

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "Neighborhood",
    "explain",
    "na1d",
    "na1d_av",
    "na1d_qk",
    "na2d",
    "na2d_av",
    "na2d_qk",
    "na3d",
    "na3d_av",
    "na3d_qk",
    "neighborhood_attention",
]
