"""Progress bars of the command-line tools and examples: shown on a terminal, silent when
stdout is redirected or captured (CI logs, pipes, `--json` runs in scripts)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable, desc=None, total=None, leave=True, enabled=True):
    """`iterable` wrapped in a tqdm bar on stderr (`iterable=None`: a bar of `total` steps to
    `update()`), silent unless `enabled` and stdout is a terminal."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not (enabled and sys.stdout.isatty()),
                dynamic_ncols=True)
