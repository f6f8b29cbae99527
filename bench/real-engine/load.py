"""Closed-loop load on one or more OpenAI completion endpoints, side by side.

    python load.py --target direct=127.0.0.1:8101 --target through=127.0.0.1:8100 \
        --model tiny-llama --concurrency 4 --seconds 10 --rounds 3 --ttfb 50

For each round, each target in turn (interleaved, so drift hits both alike) gets
`--concurrency` client threads sending non-streamed completions of `--max-tokens` tokens for
`--seconds`; then `--ttfb` streamed completions one at a time, timing the first SSE event.
Prints a Markdown table: requests/s, latency p50/p99, and SSE time to first byte p50/p99,
with the ratio or difference of each target to the first one. Standard library only.
"""

import argparse
import http.client
import json
import statistics
import threading
import time


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def completion(conn, model, max_tokens, stream):
    body = json.dumps(
        {
            "model": model,
            "prompt": "Once upon a time",
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": stream,
        }
    )
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if not stream:
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {data[:200]!r}")
        return time.perf_counter() - t0, None
    first = None
    while True:
        line = resp.readline()
        if not line:
            break
        if first is None and line.startswith(b"data: {"):
            first = time.perf_counter() - t0
    if resp.status != 200 or first is None:
        raise RuntimeError(f"stream failed: {resp.status}")
    return time.perf_counter() - t0, first


def closed_loop(addr, model, max_tokens, concurrency, seconds):
    host, port = addr.rsplit(":", 1)
    lat, errors = [], []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker():
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine = []
        while time.perf_counter() < stop:
            try:
                t, _ = completion(conn, model, max_tokens, False)
                mine.append(t)
            except Exception as e:  # counted, and the connection renewed
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(lat) / (time.perf_counter() - t0), lat, errors


def ttfb(addr, model, n):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    firsts = []
    for _ in range(n):
        _, first = completion(conn, model, 16, True)
        firsts.append(first)
    return firsts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True, help="name=host:port")
    ap.add_argument("--model", required=True)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--ttfb", type=int, default=50)
    args = ap.parse_args()
    targets = [t.split("=", 1) for t in args.target]
    res = {name: {"rps": [], "lat": [], "ttfb": [], "errors": []} for name, _ in targets}
    for r in range(args.rounds):
        for name, addr in targets:
            rps, lat, errors = closed_loop(
                addr, args.model, args.max_tokens, args.concurrency, args.seconds
            )
            res[name]["rps"].append(rps)
            res[name]["lat"].extend(lat)
            res[name]["errors"].extend(errors)
            res[name]["ttfb"].extend(ttfb(addr, args.model, args.ttfb))
    base = targets[0][0]
    b = res[base]
    print(
        f"concurrency {args.concurrency}, {args.max_tokens}-token completions, "
        f"{args.rounds} rounds x {args.seconds:g} s per target (interleaved); "
        f"SSE TTFB over {args.rounds * args.ttfb} streamed 16-token completions"
    )
    print()
    print("| target | req/s (median of rounds) | vs " + base + " | p50 ms | p99 ms | "
          "TTFB p50 ms | TTFB p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _ in targets:
        x = res[name]
        rps = statistics.median(x["rps"])
        ratio = rps / statistics.median(b["rps"])
        p50, p99 = pct(x["lat"], 50) * 1e3, pct(x["lat"], 99) * 1e3
        t50, t99 = pct(x["ttfb"], 50) * 1e3, pct(x["ttfb"], 99) * 1e3
        if name == base:
            print(f"| {name} | {rps:.1f} | 1.00x | {p50:.2f} | {p99:.2f} | {t50:.2f} | "
                  f"{t99:.2f} | {len(x['errors'])} |")
        else:
            d = lambda v, w: f"{v:.2f} ({v - w:+.2f})"
            print(f"| {name} | {rps:.1f} | {ratio:.2f}x | {d(p50, pct(b['lat'], 50) * 1e3)} | "
                  f"{d(p99, pct(b['lat'], 99) * 1e3)} | {d(t50, pct(b['ttfb'], 50) * 1e3)} | "
                  f"{d(t99, pct(b['ttfb'], 99) * 1e3)} | {len(x['errors'])} |")


if __name__ == "__main__":
    main()
