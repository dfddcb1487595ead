"""Checkpoint conversion from NATTEN (PyTorch) to jax_natten's Flax layers and models.

A NATTEN `NeighborhoodAttention1D/2D/3D` state dict, given as NumPy arrays (for example
`{k: v.numpy() for k, v in module.state_dict().items()}`), holds `qkv.weight` `[3C, C]`,
`qkv.bias` `[3C]` (unless `qkv_bias=False`), `proj.weight` `[C, C]`, `proj.bias` `[C]`, and in
NATTEN 0.17-era modules with `bias=True` the relative positional bias `rpb`
`[heads, 2k-1, ...]`. `natten_to_linen` turns it into the params of a `jax_natten.linen` layer,
`natten_to_nnx` loads it into a `jax_natten.nnx` layer.

Build the jax_natten layer with the NATTEN module's arguments: `embed_dim` (NATTEN 0.17 calls it
`dim`), `num_heads`, `kernel_size`, `stride`, `dilation`, `is_causal`, `qkv_bias`, `qk_scale`,
and `rel_pos_bias=True` for a 0.17 module that has `rpb`. Those arguments are not in the state
dict, so the conversion cannot check them. Two differences to keep in mind: NATTEN reads
`qk_scale=0` as "default scale" (jax_natten takes it literally), and NATTEN 0.17's modules
padded inputs smaller than `kernel_size * dilation` (jax_natten rejects them).

Layouts: a torch `Linear.weight` `[out, in]` is a Flax Dense kernel `[in, out]` (transposed); a
torch `Conv*d.weight` `[out, in, *window]` is a Flax Conv kernel `[*window, in, out]`; a
`LayerNorm.weight` is a Flax `scale`; biases and `rpb` keep their layout. Both libraries order
the fused `qkv` output as `[q | k | v]`, each `[heads, head_dim]`, so its rows need no
permutation.

`nat_to_linen` converts whole NAT / DiNAT / DiNAT_s checkpoints of
SHI-Labs/Neighborhood-Attention-Transformer to `jax_natten.models` networks, whose parameter
paths mirror those state-dict keys (`convert_state_dict` gives the rule); `nat_to_nnx` loads
them into the nnx versions of those networks, which have the same paths.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from jax_natten import checks


def natten_to_linen(state_dict, module):
    """The `params` of the linen layer `module` (e.g. `jax_natten.linen.NeighborhoodAttention2D`)
    holding the NATTEN state dict `state_dict`, in the module's `param_dtype`. Raises
    `ValueError` for keys the module lacks, parameters the state dict lacks, and shape
    mismatches."""
    expected = traverse_util.flatten_dict(_linen_param_shapes(module))
    return traverse_util.unflatten_dict(convert_state_dict(state_dict, expected))


def natten_to_nnx(state_dict, module):
    """Loads the NATTEN state dict `state_dict` into the nnx layer `module` (e.g.
    `jax_natten.nnx.NeighborhoodAttention2D`) in place, in its parameters' dtypes, and returns
    `module`. Raises `ValueError` as `natten_to_linen` does, before changing anything."""
    params = nnx.to_flat_state(nnx.state(module, nnx.Param))
    expected = {path: jax.ShapeDtypeStruct(param.shape, param.dtype) for path, param in params}
    nnx.update(module, nnx.from_flat_state(convert_state_dict(state_dict, expected)))
    return module


def nat_to_linen(state_dict, model, image_shape=None):
    """The `params` of `model` (a `jax_natten.models` NAT, DiNAT or DiNAT_s network) holding a
    state dict of the PyTorch models of SHI-Labs/Neighborhood-Attention-Transformer (keys such
    as `levels.0.blocks.1.attn.qkv.weight`, `layers.2.downsample.reduction.weight`), as NumPy
    arrays; the parameter shapes come from an abstract `init` on `image_shape` (default: the
    config's `image_size`). Build the model with the checkpoint's configuration (depths, heads,
    kernel size, dilations, layer scale). Raises `ValueError` for keys without a parameter,
    parameters without a key, and shape mismatches."""
    cfg = model.config
    height, width = image_shape or (cfg.image_size, cfg.image_size)
    images = jax.ShapeDtypeStruct((1, height, width, cfg.in_channels), jnp.float32)
    expected = traverse_util.flatten_dict(jax.eval_shape(model.init, jax.random.key(0), images)["params"])
    return traverse_util.unflatten_dict(convert_state_dict(state_dict, expected))


def nat_to_nnx(state_dict, model):
    """Loads a NAT / DiNAT / DiNAT_s PyTorch state dict (as for `nat_to_linen`) into the nnx
    network `model` (`jax_natten.models.create_nnx` or `nnx_network`) in place, and returns
    `model`. Raises `ValueError` as `nat_to_linen` does, before changing anything."""
    return natten_to_nnx(state_dict, model)


def convert_state_dict(state_dict, expected):
    """Maps a PyTorch state dict onto Flax parameters.

    `expected`: `{path: jax.ShapeDtypeStruct}` of the Flax parameters (paths are tuples such as
    `("qkv", "kernel")`). The torch key of a path is its parts joined by dots, with a list index
    written as a separate part (`levels_2` or `("levels", 2)` -> `levels.2`) and a `kernel` or
    `scale` leaf named `weight`: `levels_2/blocks_5/attn/qkv/kernel` <-
    `levels.2.blocks.5.attn.qkv.weight`. Returns `{path: jnp.ndarray}` with every path of
    `expected`, in its dtype. Raises `ValueError` naming the keys a side lacks, or the key and
    both shapes of a mismatch."""
    paths = {}
    for path in expected:
        key = torch_key(path)
        if key in paths:
            raise ValueError(f"the Flax parameters {_name(paths[key])} and {_name(path)} both map to {key!r}.")
        paths[key] = path
    converted = {}
    for key, value in state_dict.items():
        if key not in paths:
            continue
        path = paths[key]
        value = np.asarray(value)
        target = expected[path]
        if value.shape != _torch_shape(path, target.shape):
            raise ValueError(
                f"state_dict[{key!r}] has shape {value.shape}; the Flax parameter "
                f"{_name(path)} {tuple(target.shape)} needs {_torch_shape(path, target.shape)}."
            )
        converted[path] = jnp.asarray(_to_flax_layout(path, value), target.dtype)
    unexpected = [key for key in state_dict if key not in paths]
    missing = [_name(path) for path in expected if path not in converted]
    if unexpected or missing:
        raise ValueError(
            f"state_dict does not match the Flax parameters: keys without a parameter: "
            f"{unexpected or 'none'}; parameters without a key: {missing or 'none'}."
        )
    return converted


def torch_key(path):
    """The PyTorch state-dict key of the Flax parameter `path` (see `convert_state_dict`)."""
    parts = []
    for part in path[:-1]:
        if isinstance(part, int):
            parts.append(str(part))
            continue
        name, _, index = part.rpartition("_")
        parts.extend((name, index) if name and index.isdigit() else (part,))
    leaf = "weight" if path[-1] in ("kernel", "scale") else path[-1]
    return ".".join((*parts, leaf))


def _linen_param_shapes(module):
    """The module's params as `jax.ShapeDtypeStruct`s, from an abstract `init` on the smallest
    input its neighborhood fits."""
    nbhd = checks.neighborhood((2 ** 30,) * module.rank, module.kernel_size, module.stride,
                               module.dilation, module.is_causal)
    spatial = tuple(k * d for k, d in zip(nbhd.kernel_size, nbhd.dilation))
    x = jax.ShapeDtypeStruct((1, *spatial, module.embed_dim), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x)["params"]


def _name(path):
    return "/".join(str(part) for part in path)


def _torch_shape(path, flax_shape):
    """The shape that the torch tensor of Flax parameter `path` must have."""
    if path[-1] != "kernel":
        return tuple(flax_shape)
    *window, fan_in, fan_out = flax_shape
    return (fan_out, fan_in, *window)


def _to_flax_layout(path, value):
    if path[-1] != "kernel":
        return value
    # [out, in, *window] -> [*window, in, out]
    return np.transpose(value, (*range(2, value.ndim), 1, 0))
