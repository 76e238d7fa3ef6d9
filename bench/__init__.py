"""Benchmarks of the whole server, run from the repository root (an entry point: it may import `ivr`).

`python -m bench` (`make bench`): response latency under simulated callers on loopback, written to
`bench/results.json`. The server runs in this process exactly as `ivr serve` builds it (aiohttp on 127.0.0.1,
SQLite in a temp dir, the demo CRM as a real HTTP service). The simulated callers run in a separate process
(spawned, no models loaded there) so their protocol work neither shares the server's event loop nor counts
towards the server's CPU time. Each caller waits for the greeting, then speaks short real recordings (and a
few Piper-synthesised phrases) through 8 kHz mu-law at real-time pace, waiting for every reply.

Measured:
- response latency: caller's last voiced frame sent -> first reply frame received (what a caller hears);
- per-turn server breakdown (ASR, TTS to first frame, ...) from the call records' `turn_latency` events;
- the server's event-loop lag (a 10 ms ticker in the server's loop);
- server CPU seconds per call-minute; time from `start` to the first greeting frame;
- late outbound audio: the caller's playback buffer running dry in the middle of a bot sentence;
- a concurrency sweep, mu-law codec speed against stdlib `audioop`, and an endpointing-silence sweep.

Numbers are medians or percentiles of one run; the machine may be shared, so compare runs on a quiet one.

Modules: `run` (the whole run), `load` (calls placed at once, the concurrency and endpointing sweeps),
`callers` (the caller process), `server` (the server under test), `speech` (what callers say),
`endpointing` (the offline endpointing check), `mulaw_speed`, `stats`, `report` (results file and tables).
`asr_wer.py` is a separate script: word error rate of the two ASR paths.
"""
