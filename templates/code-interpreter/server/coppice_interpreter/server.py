"""The HTTP server on port 49999: `/health`, `POST /execute` (NDJSON), `/contexts`.

Run as `python3 -m coppice_interpreter.server [--port 49999] [--cwd /home/user]`.
"""
import argparse
import json
import os
import re
import signal
import socket
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .contexts import Contexts, UnknownLanguage, normalise

# Where envd answers inside the sandbox, for the sandbox's global environment variables.
ENVD_ENVS_URL = "http://127.0.0.1:49983/envs"
MAX_BODY = 16 << 20
CONTEXT_PATH = re.compile(r"^/contexts/([^/]+)(/restart)?$")


def global_env(token):
    """The sandbox's environment variables as envd reports them (`None` when it cannot)."""
    request = urllib.request.Request(ENVD_ENVS_URL)
    if token:
        request.add_header("X-Access-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            env = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    if not isinstance(env, dict):
        return None
    return {str(name): str(value) for name, value in env.items()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "coppice-interpreter"

    def setup(self):
        super().setup()
        # Each NDJSON line is its own small write: without this, Nagle's algorithm holds
        # the next one until the client's delayed acknowledgement (about 40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    @property
    def contexts(self):
        return self.server.contexts

    def answer(self, status, body, content_type):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def text(self, status, message):
        self.answer(status, message, "text/plain; charset=utf-8")

    def json(self, status, value):
        self.answer(status, json.dumps(value), "application/json")

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("the Content-Length is negative")
        if length > MAX_BODY:
            raise ValueError(f"the body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("the body must be a JSON object")
        return value

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.json(200, "OK")
        elif path == "/contexts":
            self.json(200, self.contexts.listed())
        else:
            self.text(404, f"{path} not found")

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            body = self.body()
        except ValueError as error:
            self.text(400, f"bad request body: {error}")
            return
        if path == "/execute":
            self.execute(body)
        elif path == "/contexts":
            self.create_context(body)
        elif (match := CONTEXT_PATH.match(path)) and match.group(2):
            context = self.contexts.get(match.group(1))
            if context is None:
                self.text(404, f"Context {match.group(1)} not found")
                return
            context.restart()
            self.json(200, None)
        else:
            self.text(404, f"{path} not found")

    def do_DELETE(self):
        path = self.path.split("?", 1)[0]
        match = CONTEXT_PATH.match(path)
        if not match or match.group(2):
            self.text(404, f"{path} not found")
        elif self.contexts.remove(match.group(1)):
            self.json(200, None)
        else:
            self.text(404, f"Context {match.group(1)} not found")

    def create_context(self, body):
        try:
            context = self.contexts.create(body.get("language"), body.get("cwd"))
        except (UnknownLanguage, FileNotFoundError) as error:
            self.text(400, str(error))
            return
        self.json(200, context.describe())

    def execute(self, body):
        code = body.get("code")
        if not isinstance(code, str):
            self.text(400, "code must be a string")
            return
        context_id, language = body.get("context_id"), body.get("language")
        if context_id and language:
            self.text(400, "Only one of context_id or language can be provided")
            return
        env_vars = body.get("env_vars") or {}
        if not isinstance(env_vars, dict):
            self.text(400, "env_vars must be an object of strings")
            return
        env_vars = {str(name): str(value) for name, value in env_vars.items()}
        if context_id:
            context = self.contexts.get(context_id)
            if context is None:
                self.text(404, f"Context {context_id} not found")
                return
        else:
            try:
                context = self.contexts.default(normalise(language))
            except UnknownLanguage as error:
                self.text(400, str(error))
                return
        token = self.headers.get("X-Access-Token")
        env = None if context.global_env_loaded else global_env(token)
        # Streamed as chunks, one NDJSON line each; no Content-Type, as the SDKs expect none.
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        messages = context.execute(code, env_vars, env)
        try:
            for message in messages:
                self.chunk((json.dumps(message) + "\n").encode())
            self.chunk(b'{"type": "end_of_execution"}\n')
            self.chunk(b"")
        except OSError:
            # The client went away: closing the execution interrupts the cell.
            self.close_connection = True
        finally:
            messages.close()

    def chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, contexts):
        super().__init__(address, Handler)
        self.contexts = contexts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=49999)
    parser.add_argument("--cwd", default=None, help="default working directory of contexts")
    args = parser.parse_args(argv)
    cwd = args.cwd or (os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/")
    contexts = Contexts(cwd)
    # The default contexts start with the server, so the first execution finds them warm.
    contexts.default("python")
    try:
        contexts.default("javascript")
    except UnknownLanguage:
        pass
    server = Server((args.host, args.port), contexts)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        contexts.stop_all()


if __name__ == "__main__":
    main()
