"""Latency harness of the code interpreter: `run_code("1")` in a warm context at the server
(HTTP over loopback, the whole NDJSON stream read), beside the floor of any persistent
interpreter: the same statement sent over a pipe to a Python loop that `exec`s it and
answers. Prints p50/p95 of both and their ratio.

Run as `python3 bench_server.py [--iterations 300]` in this directory.
"""
import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time

from coppice_interpreter.contexts import Contexts
from coppice_interpreter.server import Server

FLOOR = ("import sys\n"
         "namespace = {}\n"
         "for line in sys.stdin:\n"
         "    exec(compile(line, '<floor>', 'exec'), namespace)\n"
         "    sys.stdout.write('done\\n'); sys.stdout.flush()\n")


def percentiles(samples):
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


def server_samples(iterations):
    contexts = Contexts("/tmp")
    server = Server(("127.0.0.1", 0), contexts)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    body = json.dumps({"code": "1", "context_id": None, "language": None, "env_vars": None})
    samples = []
    try:
        for index in range(iterations + 20):
            began = time.perf_counter()
            connection.request("POST", "/execute", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            lines = answer.read().decode().splitlines()
            elapsed = time.perf_counter() - began
            if not any('"text": "1"' in line for line in lines):
                raise SystemExit(f"unexpected answer: {lines}")
            if index >= 20:  # the first executions warm the context
                samples.append(elapsed * 1000)
    finally:
        connection.close()
        server.shutdown()
        contexts.stop_all()
    return samples


def floor_samples(iterations):
    process = subprocess.Popen([sys.executable, "-c", FLOOR], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, bufsize=1)
    samples = []
    try:
        for index in range(iterations + 20):
            began = time.perf_counter()
            process.stdin.write("1\n")
            process.stdin.flush()
            process.stdout.readline()
            if index >= 20:
                samples.append((time.perf_counter() - began) * 1000)
    finally:
        process.kill()
        process.wait()
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=300)
    iterations = parser.parse_args().iterations
    server_p50, server_p95 = percentiles(server_samples(iterations))
    floor_p50, floor_p95 = percentiles(floor_samples(iterations))
    print(f"run_code('1') at the server, warm context ({iterations} runs): "
          f"p50 {server_p50:.2f} ms  p95 {server_p95:.2f} ms")
    print(f"floor: exec over a pipe in a persistent interpreter: "
          f"p50 {floor_p50:.3f} ms  p95 {floor_p95:.3f} ms")
    print(f"ratio (p50): {server_p50 / floor_p50:.1f}")


if __name__ == "__main__":
    main()
