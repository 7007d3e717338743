"""Judge client throughput: concurrent vs serial requests against a server with fixed latency.

    python benchmarks/judge_bench.py [--requests 80] [--latency 0.1] [--concurrency 16] [--repeats 3]

Starts the scriptable OpenAI-compatible test server (``tests/judge_server.py``) on 127.0.0.1 with
``latency`` seconds per reply, then sends ``requests`` distinct judge requests through
:class:`llmkick_tasks.judge.client.JudgeClient` (cache off, so every request goes over HTTP) once with
``max_concurrency=1`` and once with ``max_concurrency=concurrency``.  Prints the wall time of each, the
median over ``repeats``, and the speed-up (issue target: >= 10x for 80 requests, 100 ms, 16 vs 1; the
ideal is 80 x 0.1 s / (5 x 0.1 s) = 16x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from judge_server import JudgeServer  # noqa: E402

from llmkick_tasks.judge.client import ChatRequest, JudgeClient  # noqa: E402
from llmkick_tasks.judge.config import JudgeSettings  # noqa: E402


def timed_run(server: JudgeServer, requests: list[ChatRequest], concurrency: int) -> float:
    """Seconds to answer all ``requests`` with at most ``concurrency`` in flight (no cache)."""
    settings = JudgeSettings.from_metadata(
        {"judge_base_url": server.url, "judge_model": "bench-judge", "judge_max_concurrency": concurrency},
        environ={},
    )
    client = JudgeClient(settings, cache=None)
    started = time.perf_counter()
    results = client.complete_all(requests)
    elapsed = time.perf_counter() - started
    assert len(results) == len(requests) and client.stats.sent == len(requests)
    return elapsed


def main() -> None:
    """Run the comparison and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    requests = [
        ChatRequest.build("bench-judge", [{"role": "user", "content": f"Judge answer {i}."}], 0.2, 16)
        for i in range(options.requests)
    ]
    serial, concurrent = [], []
    with JudgeServer("8 7", latency=options.latency) as server:
        for _ in range(options.repeats):
            serial.append(timed_run(server, requests, 1))
            concurrent.append(timed_run(server, requests, options.concurrency))
            print(
                f"  concurrency 1: {serial[-1]:6.2f} s   "
                f"concurrency {options.concurrency}: {concurrent[-1]:6.2f} s"
            )
    one, many = statistics.median(serial), statistics.median(concurrent)
    ideal = (
        options.requests * options.latency / (-(-options.requests // options.concurrency) * options.latency)
    )
    print(
        f"{options.requests} requests, {options.latency * 1000:.0f} ms latency: concurrency 1 {one:.2f} s, "
        f"concurrency {options.concurrency} {many:.2f} s -> {one / many:.1f}x faster (ideal {ideal:.0f}x, "
        f"target >= 10x)"
    )


if __name__ == "__main__":
    main()
