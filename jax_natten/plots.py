"""Pictures of the command-line tools (`--plot FILE.png`): benchmark times and ratios to dense
attention, sweep speedups over kernel size, and the keys that chosen queries attend. matplotlib
is imported only here, on demand (`pip install matplotlib`, in the `examples` and `test` extras)."""

from __future__ import annotations

import statistics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bench_plot(path, title, records, baselines):
    """Per pass: each backend's time (dense attention included) and its speedup over dense
    attention (dense ms / backend ms)."""
    plt = _pyplot()
    passes = list(dict.fromkeys(r.passes for r in records))
    fig, (time_axis, ratio_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(1, len(passes))
    names = list(dict.fromkeys([b.backend for b in baselines.values()][:1] + [r.backend for r in records]))
    dense_label = names[0] if baselines else None
    for i, p in enumerate(passes):
        times = {r.backend: r.ms for r in records if r.passes == p}
        if p in baselines:
            times[dense_label] = baselines[p].ms
        xs = [j + (i - (len(passes) - 1) / 2) * width for j in range(len(names))]
        time_axis.bar(xs, [times.get(n, 0.0) for n in names], width, label=p)
        if p in baselines:
            backends = [n for n in names if n != dense_label]
            speedups = [baselines[p].ms / times[n] for n in backends]
            bars = ratio_axis.bar([xs[names.index(n)] for n in backends], speedups, width, label=p)
            ratio_axis.bar_label(bars, fmt="%.2fx", fontsize=8)
    time_axis.set_xticks(range(len(names)), names)
    time_axis.set_ylabel("ms (median)")
    time_axis.set_yscale("log")
    time_axis.set_title("time per call")
    time_axis.legend()
    ratio_axis.set_xticks(range(len(names)), names)
    ratio_axis.axhline(1.0, color="gray", lw=0.8, ls="--")
    ratio_axis.set_ylabel("speedup over dense (time)")
    ratio_axis.set_title("dense ms / backend ms" if baselines else "no dense baseline (--no-baseline)")
    if baselines:
        ratio_axis.legend()
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_plot(path, title, records, baseline):
    """Speedup of each backend over `baseline` against kernel size, one panel per rank, one
    line per (backend, dtype, pass), averaged over the sweep's resolutions and dilations."""
    plt = _pyplot()
    lines = speedups_by_kernel(records, baseline)
    ranks = sorted(lines)
    fig, axes = plt.subplots(1, len(ranks), figsize=(5 * len(ranks), 3.8), squeeze=False)
    for axis, rank in zip(axes[0], ranks):
        for (backend, dtype, passes), by_kernel in sorted(lines[rank].items()):
            kernels = sorted(by_kernel)
            axis.plot(kernels, [by_kernel[k] for k in kernels], "o-",
                      label=f"{backend} {dtype} {passes}")
        axis.axhline(1.0, color="gray", lw=0.8, ls="--")
        axis.set_xscale("log", base=2)
        axis.set_xticks(kernels, [str(k) for k in kernels])
        axis.set_xlabel("kernel size (per axis)")
        axis.set_ylabel(f"speedup over {baseline} (mean)")
        axis.set_title(f"{rank}-D")
        axis.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speedups_by_kernel(records, baseline):
    """`{rank: {(backend, dtype, pass): {kernel_size: mean speedup}}}` of the sweep's `(problem,
    record)` pairs over `baseline` (baseline ms / backend ms on the same problem, dtype, pass)."""
    times = {(p.name, p.dtype, r.passes, r.backend): r.ms for p, r in records}
    lines = {}
    for p, r in records:
        if r.backend == baseline:
            continue
        speedup = times[(p.name, p.dtype, r.passes, baseline)] / r.ms
        lines.setdefault(p.rank, {}).setdefault((r.backend, p.dtype, r.passes), {}).setdefault(
            p.kernel_size[0], []).append(speedup)
    return {rank: {key: {k: statistics.mean(v) for k, v in by_kernel.items()} for key, by_kernel in series.items()}
            for rank, series in lines.items()}


def neighborhood_plot(path, title, masks, queries):
    """One panel per query: its attended keys (`masks`, 1-D or 2-D boolean arrays) shaded, the
    query itself outlined in red."""
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    rank = masks[0].ndim
    if rank == 1:
        fig, axis = plt.subplots(figsize=(max(4.0, 0.25 * masks[0].size + 1.5), 0.45 * len(masks) + 1.2))
        axis.imshow([m.astype(float) for m in masks], cmap="Blues", vmin=0, vmax=1.3, aspect="equal")
        for row, (q,) in enumerate(queries):
            axis.add_patch(Rectangle((q - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=2))
        axis.set_yticks(range(len(queries)), [f"query {q}" for (q,) in queries])
        axis.set_xlabel("key position")
        _grid(axis, masks[0].size, len(masks))
    else:
        columns = min(4, len(masks))
        rows = -(-len(masks) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.2 * rows + 0.6), squeeze=False)
        for axis in axes.flat[len(masks):]:
            axis.set_visible(False)
        for axis, mask, (qy, qx) in zip(axes.flat, masks, queries):
            axis.imshow(mask.astype(float), cmap="Blues", vmin=0, vmax=1.3)
            axis.add_patch(Rectangle((qx - 0.5, qy - 0.5), 1, 1, fill=False, ec="red", lw=2))
            axis.set_title(f"query ({qy}, {qx}): {int(mask.sum())} keys", fontsize=9)
            _grid(axis, mask.shape[1], mask.shape[0])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid(axis, columns, rows):
    axis.set_xticks([c - 0.5 for c in range(columns + 1)], minor=True)
    axis.set_yticks([r - 0.5 for r in range(rows + 1)], minor=True)
    axis.grid(which="minor", color="lightgray", lw=0.5)
    axis.tick_params(which="minor", length=0)
