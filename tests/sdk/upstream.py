#!/usr/bin/env python3
"""Servers standing in for the outside, run by the network tests inside a network namespace
they created (never on any other address).

usage: upstream.py V4 V6 PORT

- TCP PORT (IPv4 and IPv6): greets every client with b"hello\\n", then sends b"." every 20 ms
  until the client goes away.
- UDP 53: a DNS responder that answers every A question with V4 and every AAAA question with
  V6 (TTL 300), and every other question with no records.

Prints "ready" once both listen, then serves until killed.
"""
import socket
import struct
import sys
import threading
import time

V4, V6, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


def dual_stack(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s


def tick(conn):
    try:
        conn.sendall(b"hello\n")
        while True:
            time.sleep(0.02)
            conn.sendall(b".")
    except OSError:
        pass


def serve_tcp(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=tick, args=(conn,), daemon=True).start()


def answer(query):
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    qtype = struct.unpack(">H", query[end + 1:end + 3])[0]
    question = query[12:end + 5]
    rdata = {1: socket.inet_pton(socket.AF_INET, V4), 28: socket.inet_pton(socket.AF_INET6, V6)}.get(qtype)
    header = query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1 if rdata else 0, 0, 0)
    record = b""
    if rdata:
        record = b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 300, len(rdata)) + rdata
    return header + question + record


def serve_dns(sock):
    while True:
        query, client = sock.recvfrom(4096)
        try:
            sock.sendto(answer(query), client)
        except (IndexError, struct.error):
            pass


tcp = dual_stack(socket.SOCK_STREAM)
tcp.bind(("::", PORT))
tcp.listen(1024)
dns = dual_stack(socket.SOCK_DGRAM)
dns.bind(("::", 53))
threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
threading.Thread(target=serve_dns, args=(dns,), daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
