"""`python -m bench` (`make bench`): the latency benchmark; see `bench/__init__.py` for what it measures."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="latency benchmark of the whole server with simulated callers on loopback"
    )
    parser.add_argument("--config", help="YAML configuration file (IVR_* variables override it)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--out", default="bench/results.json", help="results file (JSON)")
    parser.add_argument(
        "--levels", default="1,10,20,40,60", help="callers at once at each level of the sweep (comma-separated)"
    )
    parser.add_argument("--turns", type=int, default=3, help="utterances each caller speaks (1 caller: twice that)")
    parser.add_argument("--arrival-s", type=float, default=0.37, help="seconds between two callers' arrivals")
    parser.add_argument("--caller-processes", type=int, default=2, help="processes the simulated callers run in")
    parser.add_argument(
        "--capacity", type=int, default=100_000, help="the server's admission limit (default: none, to measure it)"
    )
    parser.add_argument("--stop-on-fail", action="store_true", help="stop at the first level over the limit")
    parser.add_argument(
        "--no-extras", action="store_true", help="only the sweep: no codec speed, endpoint-silence or offline checks"
    )
    parser.add_argument(
        "--peer", action="store_true", help="also one caller to Pipecat, side by side (`make bench-peer` sets it up)"
    )
    parser.add_argument("--quick", action="store_true", help="1 and 2 callers, one utterance each, no sweeps")
    args = parser.parse_args(argv)

    # Imported here: the spawned caller process imports this package too, and needs neither.
    from bench.load import SweepOptions
    from bench.run import run_bench
    from ivr.cli import setup_logging
    from ivr.config import Settings
    from ivr.event_loop import run

    setup_logging(args.log_level)
    settings = Settings.load(args.config)
    options = SweepOptions(
        levels=tuple(int(n) for n in args.levels.split(",") if n.strip()),
        turns=args.turns,
        single_call_turns=2 * args.turns,
        arrival_s=args.arrival_s,
        caller_processes=args.caller_processes,
        stop_on_fail=args.stop_on_fail,
        capacity=args.capacity,
    )
    # The server is built in this process, so it runs on the loop `ivr serve` would (`Settings.event_loop`).
    return run(
        run_bench(
            settings, out=Path(args.out), options=options, quick=args.quick, extras=not args.no_extras, peer=args.peer
        ),
        settings.event_loop,
    )


if __name__ == "__main__":
    raise SystemExit(main())
