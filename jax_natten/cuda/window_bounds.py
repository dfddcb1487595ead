"""window_bounds: the C++ neighborhood header's view of one axis (cuda/ffi/window_bounds.cu)."""

from __future__ import annotations

import jax
import numpy as np

from jax_natten import cuda


def window_bounds(length, kernel_size, stride, dilation, is_causal):
    """`[length, 4]` int32 per position: window start/end and inverse-window start/end, in-group
    coordinates, as computed on the GPU by `cuda/include/jax_natten/neighborhood.h`."""
    call = jax.ffi.ffi_call(cuda.TARGET_PREFIX + "window_bounds",
                            jax.ShapeDtypeStruct((length, 4), np.int32))
    return call(length=int(length), kernel_size=int(kernel_size), stride=int(stride),
                dilation=int(dilation), is_causal=bool(is_causal))
