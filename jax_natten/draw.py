"""`python -m jax_natten neighborhood`: which keys chosen queries attend, for a 1-D or 2-D token
grid and given kernel size, stride, dilation and causal flags; as text, or a PNG with --plot.

    python -m jax_natten neighborhood --size 16 --kernel-size 5 --dilation 2 --query 0 --query 9
    python -m jax_natten neighborhood --size 12,12 --kernel-size 5 --stride 2 --plot nbhd.png

Text: one grid per query, `#` an attended key, `.` a key it does not attend, the query itself
`Q` (attended) or `q` (not attended: its stride leader's window can exclude it).
"""

from __future__ import annotations

import argparse
import pathlib

from jax_natten import checks, neighborhood
from jax_natten.bench import _bools, _ints, _per_axis


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--size", type=_ints, default=(12, 12), help="spatial shape, 1-D or 2-D (default 12,12)")
    parser.add_argument("--kernel-size", type=_ints, default=(5,), help="per axis or one for all (default 5)")
    parser.add_argument("--stride", type=_ints, default=(1,))
    parser.add_argument("--dilation", type=_ints, default=(1,))
    parser.add_argument("--causal", type=_bools, default=(False,), help="per axis or one for all, e.g. true,false")
    parser.add_argument("--query", type=_ints, action="append",
                        help="a query's coordinates, e.g. 0,5 (repeat for several; default: corners and centre)")
    parser.add_argument("--plot", type=pathlib.Path, help="write a PNG here instead of printing text")


def default_queries(shape):
    """A corner, the centre and the far corner (the borders are where windows shift)."""
    corners = [tuple(0 for _ in shape), tuple(n // 2 for n in shape), tuple(n - 1 for n in shape)]
    if len(shape) == 2:
        corners.insert(1, (0, shape[1] // 2))
    return list(dict.fromkeys(corners))


def text(mask, query):
    """The text grid of one query's attended keys (see the module docstring)."""
    rows = mask.reshape(-1, mask.shape[-1])
    lines = []
    for y, row in enumerate(rows):
        cells = ["#" if attended else "." for attended in row]
        if len(query) == 1 or y == query[0]:
            cells[query[-1]] = "Q" if row[query[-1]] else "q"
        lines.append(" ".join(cells))
    return "\n".join(lines)


def main(args):
    shape = args.size
    if len(shape) not in (1, 2):
        raise SystemExit(f"--size {','.join(map(str, shape))}: drawing needs a 1-D or 2-D grid.")
    per_axis = {name: _per_axis(getattr(args, name), len(shape), name.replace("_", "-"))
                for name in ("kernel_size", "stride", "dilation", "causal")}
    try:
        nbhd = checks.neighborhood(shape, per_axis["kernel_size"], per_axis["stride"], per_axis["dilation"],
                                   per_axis["causal"])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    queries = args.query or default_queries(shape)
    for q in queries:
        if len(q) != len(shape) or not all(0 <= c < n for c, n in zip(q, shape)):
            raise SystemExit(f"--query {','.join(map(str, q))}: not a position of a {'x'.join(map(str, shape))} grid.")
    masks = [neighborhood.attended_keys(shape, nbhd, q) for q in queries]
    title = (f"size {shape}, kernel {nbhd.kernel_size}, stride {nbhd.stride}, dilation {nbhd.dilation}, "
             f"causal {nbhd.is_causal}")
    if args.plot:
        from jax_natten import plots

        plots.neighborhood_plot(args.plot, title, masks, queries)
        print(f"wrote {args.plot}")
        return
    print(title)
    for q, mask in zip(queries, masks):
        print(f"\nquery {q}: {int(mask.sum())} keys")
        print(text(mask, q))
