"""Command line: `python -m jax_natten bench|sweep|models|neighborhood|plan|tune [options]` (see `--help`)."""

import argparse
import sys

from jax_natten import bench, bench_models, draw, fused_plan, tune


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jax_natten", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench.add_arguments(commands.add_parser(
        "bench", help="time every backend on one problem against dense attention",
        description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    bench.add_sweep_arguments(commands.add_parser(
        "sweep", help="compare backends over the documented sweep of 1-D and 2-D problems",
        description=bench.sweep_main.__doc__))
    bench_models.add_arguments(commands.add_parser(
        "models", help="model-level throughput of the NAT/DiNAT zoo per backend against dense attention",
        description=bench_models.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    draw.add_arguments(commands.add_parser(
        "neighborhood", help="draw the keys chosen queries attend (text, or a PNG with --plot)",
        description=draw.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    fused_plan.add_arguments(commands.add_parser(
        "plan", help="dry run of the fused forward kernel: tiles, grid, tile efficiency, smem/registers (no GPU)",
        description=fused_plan.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    tune.add_arguments(commands.add_parser(
        "tune", help="time the fused forward's tile boxes on this device and cache the fastest for the fused backend",
        description=tune.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    mains = {"bench": bench.main, "sweep": bench.sweep_main, "models": bench_models.main, "neighborhood": draw.main,
             "plan": fused_plan.main, "tune": tune.main}
    mains[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
