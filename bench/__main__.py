"""`python -m bench` (`make bench`): the latency benchmark; see `bench/__init__.py` for what it measures."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="latency benchmark of the whole server with simulated callers on loopback"
    )
    parser.add_argument("--config", help="YAML configuration file (IVR_* variables override it)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--out", default="bench/results.json", help="results file (JSON)")
    parser.add_argument("--max-callers", type=int, default=20, help="largest concurrency level of the sweep")
    parser.add_argument("--quick", action="store_true", help="1 and 2 callers, one utterance each, no sweeps")
    args = parser.parse_args(argv)

    # Imported here: the spawned caller process imports this package too, and needs neither.
    from bench.run import run_bench
    from ivr.cli import setup_logging
    from ivr.config import Settings

    setup_logging(args.log_level)
    settings = Settings.load(args.config)
    return asyncio.run(run_bench(settings, out=Path(args.out), max_callers=args.max_callers, quick=args.quick))


if __name__ == "__main__":
    raise SystemExit(main())
