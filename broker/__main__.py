"""`python -m broker [flags]`: the same as the `eventgrid-emulator` command (broker/cli.py)."""

from __future__ import annotations

import sys

from .cli import choose_cpu, main

__all__ = ["choose_cpu", "main"]

if __name__ == "__main__":
    sys.exit(main())
