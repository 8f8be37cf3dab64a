"""Reading a service's settings from environment variables, with defaults.

Stdlib only, so the publisher image (which has no Flask) can use it too.
"""

from __future__ import annotations

from collections.abc import Mapping


def env_text(environ: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or `default` when it is unset or blank (compose's `VAR=` passes "")."""
    value = environ.get(name, "").strip()
    return value or default


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = env_text(environ, name, str(default))
    try:
        return int(raw)
    except ValueError:
        # Stop at start-up naming the variable, rather than failing later somewhere less obvious.
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = env_text(environ, name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
