"""The on-disk cache of `python -m jax_natten tune`: per problem signature, the fused forward's
fastest (Q tile box, KV tile box) measured on a device, which `fused_plan.plan` uses in place of
its tile-efficiency rule.

One JSON file, `tune.json` in $JAX_NATTEN_CACHE_DIR, else in $XDG_CACHE_HOME/jax_natten, else in
~/.cache/jax_natten. $JAX_NATTEN_TUNE_CACHE=off stops the fused backend from reading it.

The key of an entry (`signature`): the device (kind and platform), the library version, the tile
rows the kernel was compiled with, and the per-(batch, head) problem: spatial shape, kernel size,
stride, dilation, causal axes, head dims, dtype and GQA group. Batch and heads are not in it: the
kernel launches one CTA per (Q tile, head, batch), so they multiply the work of every candidate
alike, and under sharding each shard sees its own batch and head counts, which would miss every
entry tuned at the global shape. An entry records the batch and heads it was measured at.

Writers hold an exclusive `fcntl.flock` on `tune.json.lock` while they read, merge and replace
the file (written to a temporary file in the same directory, then `os.replace`d), so concurrent
tuners, in any process, keep each other's entries and a reader never sees a half-written file
(readers take no lock). A file that does not parse, or of another `FORMAT`, is ignored with a
warning (and replaced by the next write).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import json
import os
import pathlib
import tempfile
import warnings

FORMAT = 1
FILE_NAME = "tune.json"
DISABLE_VARIABLE = "JAX_NATTEN_TUNE_CACHE"


def cache_path() -> pathlib.Path:
    directory = os.environ.get("JAX_NATTEN_CACHE_DIR")
    if not directory:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        directory = os.path.join(xdg, "jax_natten")
    return pathlib.Path(directory) / FILE_NAME


def reading_enabled() -> bool:
    return os.environ.get(DISABLE_VARIABLE, "on").lower() not in ("off", "0", "false", "no")


def library_version() -> str:
    from jax_natten import __version__
    return __version__


def device_for(platform: str):
    """The first JAX device of the fused kernel's XLA `platform` ("CUDA": a GPU, "cpu": the host
    emulation), or None when JAX has none."""
    import jax
    try:
        return jax.devices("gpu" if platform == "CUDA" else "cpu")[0]
    except RuntimeError:
        return None


def signature(device, tile_rows, spatial_shape, nbhd, head_dim, head_dim_v, dtype, group) -> str:
    """The cache key (see the module docstring), as canonical JSON."""
    fields = {
        "device_kind": device.device_kind, "platform": device.platform, "version": library_version(),
        "tile_rows": list(tile_rows), "spatial": list(spatial_shape), "kernel_size": list(nbhd.kernel_size),
        "stride": list(nbhd.stride), "dilation": list(nbhd.dilation), "causal": [bool(c) for c in nbhd.is_causal],
        "head_dim": head_dim, "head_dim_v": head_dim_v, "dtype": dtype, "group": group,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _parse(text: str, path) -> dict:
    """The entries of a cache file's text; {} with a warning when it is not a cache of this FORMAT."""
    try:
        data = json.loads(text)
    except ValueError as error:
        warnings.warn(f"jax_natten: ignoring the tuning cache {path}: not JSON ({error})", stacklevel=3)
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        warnings.warn(f"jax_natten: ignoring the tuning cache {path}: format {found!r}, this library reads "
                      f"format {FORMAT}", stacklevel=3)
        return {}
    return data["entries"]


@functools.lru_cache(maxsize=8)
def _entries_at(path: str, inode: int, mtime_ns: int, size: int) -> dict:
    # Keyed on the file's identity: a replaced file (a new inode) is read again, an unchanged one never.
    with open(path) as file:
        return _parse(file.read(), path)


def entries(path: pathlib.Path | None = None) -> dict:
    """Every entry of the cache file (key -> entry), {} when there is none."""
    path = cache_path() if path is None else path
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return {}
    return _entries_at(str(path), status.st_ino, status.st_mtime_ns, status.st_size)


def lookup(key: str, path: pathlib.Path | None = None):
    """The entry for `key`, or None (also when reading is disabled by $JAX_NATTEN_TUNE_CACHE=off)."""
    if not reading_enabled():
        return None
    return entries(path).get(key)


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def store(new_entries: dict, path: pathlib.Path | None = None) -> pathlib.Path:
    """Merges `new_entries` (key -> entry) into the cache file under its lock; returns the path."""
    path = cache_path() if path is None else path
    with _locked(path):
        try:
            merged = dict(_parse(path.read_text(), path))
        except FileNotFoundError:
            merged = {}
        merged.update(new_entries)
        text = json.dumps({"format": FORMAT, "entries": merged}, indent=1, sort_keys=True) + "\n"
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=path.name + ".", suffix=".tmp",
                                         delete=False) as temporary:
            try:
                temporary.write(text)
                temporary.flush()
                os.fsync(temporary.fileno())
            except BaseException:
                os.unlink(temporary.name)
                raise
        os.replace(temporary.name, path)
    return path


def entry(q_tile, kv_tile, ms, passes, backend, batch, heads, candidates) -> dict:
    return {"q_tile": list(q_tile), "kv_tile": list(kv_tile), "ms": ms, "passes": passes, "backend": backend,
            "batch": batch, "heads": heads, "candidates": candidates, "date": datetime.date.today().isoformat()}
