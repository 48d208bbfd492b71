"""Dispatcher: `python -m benchmarks <name> [args]` runs benchmarks/<name>.py's main(argv)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not m.name.startswith("_") and m.name != "common")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("list", "-h", "--help"):
        print("benchmarks:", ", ".join(available()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available():
        print(f"unknown benchmark {name!r}; available: {', '.join(available())}", file=sys.stderr)
        return 2
    from .common import cleanup_redis, conditions, setup_django

    setup_django()
    print(conditions("before"), flush=True)
    try:
        return int(importlib.import_module(f"benchmarks.{name}").main(rest) or 0)
    finally:
        print(conditions("after"), flush=True)
        try:
            print(f"redis clean-up: {cleanup_redis()} key(s) deleted", flush=True)
        except Exception as exc:  # the figures matter more than the clean-up
            print(f"warning: redis clean-up failed: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
