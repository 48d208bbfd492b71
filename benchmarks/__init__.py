"""Benchmarks: each module prints its figures beside a baseline measured in the same run.

Run one with `make bench BENCH_ARGS=<name>` (or `.venv/bin/python -m benchmarks <name>`); `list` names them.
They use the real stack (PostgreSQL, Redis, the fake Bitrix24 / carriers over HTTP on 127.0.0.1) and are
never run by the test suite: targets are read from their output, not asserted.
"""
