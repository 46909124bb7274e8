"""`ft serve` under a bounded local load test: throughput, p50/p99 latency and errors, with
the batching queue and without it (--max-batch 1, the reference), side by side.

    python bench/serve.py RUN [--requests 2000] [--concurrency 16] [--backend torch]
    python bench/serve.py RUN --bad-share 0.05 --concurrency 200

Each request is one text (or pair) of the run's validation split, sent by
`--concurrency` client threads over keep-alive connections. Both servers run
in turn in this one invocation (`ft serve` in its own process, warmed up with
50 requests first); the table prints both.

With `--bad-share F`, one batched server takes the same load twice: clean (the
reference) and with a share F of bad requests mixed in (a lone surrogate the
tokenizer cannot read, a word list sent to a sentence model, broken JSON, an
unknown field, an over-long text). Every good request must answer 200 and every
bad one 4xx; latencies are those of the good requests in both rows.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from ft_cli import tasks
from ft_cli.models import trained


def bodies(run: str) -> list[bytes]:
    """A /predict body per validation row: {"text": ...} or {"text": ..., "text_pair": ...}."""
    spec = trained.spec_for(trained.locate(run), [])
    split = tasks.get(spec.task.kind).load_raw(spec.data).splits["validation"]
    pair = spec.data.text_pair_column
    found = []
    for row in split:
        body = {"text": row[spec.data.text_column]}
        if pair is not None:
            body["text_pair"] = row[pair]
        found.append(json.dumps(body).encode())
    return found


@contextlib.contextmanager
def server(run: str, flags: list[str]) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ft_cli", "serve", run, "--port", str(port), *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ft serve did not start: {process.stderr.read().decode()}")
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


# Requests a server must refuse with a 4xx without harming the good ones batched with them.
BAD = [
    b'{"text": "a lone surrogate \\ud800 the tokenizer cannot read"}',
    b'{"text": ["a", "list", "of", "words"]}',
    b'{"text": "broken json"',
    b'{"sentence": "an unknown field"}',
    json.dumps({"text": "x" * 20_000}).encode(),
]


def load(
    port: int, payloads: list[bytes], requests: int, concurrency: int, bad_share: float = 0.0
) -> dict:
    """Send the requests; every `round(1 / bad_share)`-th one is bad (none at 0). Errors:
    a good request not answered 200, or a bad one not refused with a 4xx."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    turn = iter(range(requests))
    every = round(1 / bad_share) if bad_share > 0 else 0

    def client() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {"Content-Type": "application/json"}
        for index in turn:  # next() on a shared iterator: each index once
            bad = every > 0 and index % every == every - 1
            body = (
                BAD[(index // max(every, 1)) % len(BAD)] if bad else payloads[index % len(payloads)]
            )
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body, headers)
                answer = connection.getresponse()
                answer.read()
                failed = not 400 <= answer.status < 500 if bad else answer.status != 200
            except (OSError, http.client.HTTPException):
                failed = True
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                if not bad:
                    latencies.append(time.perf_counter() - start)
                errors += failed

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests/s": len(ordered) / wall,
        "p50 ms": 1000 * statistics.median(ordered),
        "p99 ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "errors": errors,
        "wall s": wall,
    }


def stats(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/stats")
    return json.loads(connection.getresponse().read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--max-batch", default="32")
    parser.add_argument("--bad-share", type=float, default=0.0)
    args = parser.parse_args()
    payloads = bodies(args.run)
    if args.bad_share > 0:
        mixed(args, payloads)
        return
    setups = {
        f"batched (max {args.max_batch}, 5 ms)": ["--max-batch", args.max_batch],
        "unbatched (reference)": ["--max-batch", "1", "--max-wait-ms", "0"],
    }
    print(
        f"{args.requests} requests, {args.concurrency} concurrent, backend {args.backend},"
        f" {len(payloads)} distinct validation rows"
    )
    print(
        f"{'server':28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'mean rows/batch':>16}"
    )
    for name, flags in setups.items():
        with server(args.run, [*flags, "--backend", args.backend]) as port:
            load(port, payloads, 50, args.concurrency)  # warm-up
            before = stats(port)
            found = load(port, payloads, args.requests, args.concurrency)
            after = stats(port)
        batches = after["batches"] - before["batches"]
        rows = (after["rows"] - before["rows"]) / max(batches, 1)
        print(
            f"{name:28} {found['requests/s']:8.1f} {found['p50 ms']:8.1f}"
            f" {found['p99 ms']:8.1f} {found['errors']:7d} {rows:16.1f}"
        )


def mixed(args: argparse.Namespace, payloads: list[bytes]) -> None:
    """One batched server, the same load clean and with bad requests mixed in."""
    print(
        f"{args.requests} requests, {args.concurrency} concurrent, backend {args.backend},"
        f" bad share {args.bad_share:g}"
    )
    print(f"{'load':28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'refused':>8}")
    flags = ["--max-batch", args.max_batch, "--backend", args.backend]
    with server(args.run, flags) as port:
        load(port, payloads, 50, min(args.concurrency, 16))  # warm-up
        for name, share in (
            ("clean (reference)", 0.0),
            (f"{args.bad_share:.0%} bad mixed in", args.bad_share),
        ):
            before = stats(port)
            found = load(port, payloads, args.requests, args.concurrency, share)
            refused = stats(port)["refused"] - before["refused"]
            print(
                f"{name:28} {found['requests/s']:8.1f} {found['p50 ms']:8.1f}"
                f" {found['p99 ms']:8.1f} {found['errors']:7d} {refused:8d}"
            )


if __name__ == "__main__":
    main()
