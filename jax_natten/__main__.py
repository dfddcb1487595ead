"""Command line: `python -m jax_natten bench [options]` (see `--help`)."""

import argparse
import sys

from jax_natten import bench


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jax_natten", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench.add_arguments(commands.add_parser(
        "bench", help="time every backend on one problem against dense attention",
        description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    bench.add_sweep_arguments(commands.add_parser(
        "sweep", help="compare backends over the documented sweep of 1-D and 2-D problems",
        description=bench.sweep_main.__doc__))
    args = parser.parse_args(argv)
    if args.command == "bench":
        bench.main(args)
    else:
        bench.sweep_main(args)


if __name__ == "__main__":
    sys.exit(main())
