#!/usr/bin/env python3
"""Latency harness of the code-interpreter-v1 template through the unmodified SDKs, against
a running coppiced (E2B_API_URL and friends set): create until the first `run_code("1")`
answers, beside the same for the base template with the base SDK (create until the first
`commands.run("true")` answers) as the peer, and `run_code("1")` in a warm context through
the gateway. Prints p50/p95 of each and the ratio to the peer.
"""
import argparse
import statistics
import time

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeInterpreter


def percentiles(samples):
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def timed(create, first):
    began = time.perf_counter()
    sandbox = create()
    try:
        first(sandbox)
        return (time.perf_counter() - began) * 1000
    finally:
        sandbox.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args()
    interpreter, peer = [], []
    for _ in range(args.iterations):
        interpreter.append(timed(lambda: CodeInterpreter.create(timeout=120),
                                 lambda ci: ci.run_code("1")))
        peer.append(timed(lambda: Sandbox.create(timeout=120),
                          lambda sbx: sbx.commands.run("true")))
    ci = CodeInterpreter.create(timeout=120)
    warm = []
    try:
        for _ in range(args.warm):
            began = time.perf_counter()
            ci.run_code("1")
            warm.append((time.perf_counter() - began) * 1000)
    finally:
        ci.kill()
    ci_p50, ci_p95 = percentiles(interpreter)
    peer_p50, peer_p95 = percentiles(peer)
    warm_p50, warm_p95 = percentiles(warm)
    print(f"code-interpreter-v1: create until run_code('1') answers ({args.iterations} runs): "
          f"p50 {ci_p50:.0f} ms  p95 {ci_p95:.0f} ms")
    print(f"peer, base template: create until commands.run('true') answers: "
          f"p50 {peer_p50:.0f} ms  p95 {peer_p95:.0f} ms")
    print(f"ratio (p50): {ci_p50 / peer_p50:.2f}")
    print(f"run_code('1') in a warm context through the gateway ({args.warm} runs): "
          f"p50 {warm_p50:.1f} ms  p95 {warm_p95:.1f} ms")


if __name__ == "__main__":
    main()
