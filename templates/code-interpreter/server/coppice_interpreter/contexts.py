"""Contexts: one persistent worker process per context, and the executions streamed from it.

A worker's cell output (descriptors 1 and 2) and its replies (results, errors, the end of an
execution) come through three pipes, read by three threads into one queue; an execution is
over once the worker said so and both output pipes have passed the execution's marker, so no
output of a cell is lost or handed to the next one.
"""
import codecs
import datetime
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
LANGUAGES = {"python", "javascript"}
ALIASES = {"js": "javascript", "py": "python", "python3": "python"}
# How often an idle execution tells the client it is still alive.
KEEPALIVE_SECONDS = float(os.environ.get("COPPICE_INTERPRETER_KEEPALIVE", "5"))


def normalise(language):
    language = (language or "python").strip().lower()
    return ALIASES.get(language, language)


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


# What an execution reports when its interpreter ended under it.
ENDED = {
    "type": "error",
    "name": "UnexpectedEndOfExecution",
    "value": "the interpreter exited; its state is lost and it was restarted",
    "traceback": "",
}


class UnknownLanguage(Exception):
    pass


class Worker:
    """A running interpreter and the threads that read its pipes."""

    def __init__(self, language, cwd, env):
        self.events = queue.Queue()
        requests_r, self.requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        if language == "python":
            argv = [sys.executable, os.path.join(HERE, "python_worker.py")]
        else:
            node = shutil.which("node") or shutil.which("nodejs")
            if node is None:
                raise UnknownLanguage("javascript needs node, which is not installed")
            argv = [node, os.path.join(HERE, "js_worker.js")]
        argv += [str(requests_r), str(replies_w)]
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(requests_r, replies_w),
            start_new_session=True,
        )
        os.close(requests_r)
        os.close(replies_w)
        self.requests = os.fdopen(self.requests_w, "w", encoding="utf-8")
        self.marker = ""
        self.marker_lock = threading.Lock()
        # Output pipes whose end an execution has taken from the events (a cell may close its
        # own stdout). Kept by the consumer, never the reader: the reader's end comes after
        # output still queued, which must not be skipped.
        self.closed = set()
        for kind, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            threading.Thread(target=self.read_output, args=(kind, pipe), daemon=True).start()
        replies = os.fdopen(replies_r, "r", encoding="utf-8")
        threading.Thread(target=self.read_replies, args=(replies,), daemon=True).start()

    def read_output(self, kind, pipe):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        while True:
            chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            if not chunk:
                if pending:
                    self.events.put((kind, pending))
                self.events.put((kind + "_closed", None))
                return
            pending += decoder.decode(chunk)
            while True:
                with self.marker_lock:
                    marker = self.marker
                at = pending.find(marker) if marker else -1
                if at < 0:
                    break
                if at:
                    self.events.put((kind, pending[:at]))
                self.events.put((kind + "_marker", None))
                pending = pending[at + len(marker):]
            # Hold back only what could be the start of a marker split across reads, so a
            # long cell's output streams as it is printed.
            start = pending.rfind("\x1e")
            with self.marker_lock:
                marker = self.marker
            held = start >= 0 and bool(marker) and marker.startswith(pending[start:])
            ready = pending[:start] if held else pending
            if ready:
                self.events.put((kind, ready))
            pending = pending[start:] if held else ""

    def read_replies(self, replies):
        for line in replies:
            try:
                self.events.put(("reply", json.loads(line)))
            except ValueError:
                continue
        self.events.put(("ended", None))

    def send(self, request):
        self.requests.write(json.dumps(request) + "\n")
        self.requests.flush()

    def interrupt(self):
        try:
            os.kill(self.process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def stop(self):
        # Once reaped its pid may be another process's: only a live worker's group is killed.
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.requests.close()
        except OSError:
            pass
        self.process.wait()


class Context:
    def __init__(self, language, cwd, env):
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.env = env
        self.lock = threading.Lock()
        self.global_env_loaded = False
        self.removed = False
        self.worker = Worker(language, cwd, env)

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def replace_worker(self):
        """A fresh worker for one that ended (none for a removed context)."""
        self.worker.stop()
        if not self.removed:
            self.worker = Worker(self.language, self.cwd, self.env)
        self.global_env_loaded = False

    def restart(self):
        # Killed first, without waiting for a running cell: that cell ends, reporting it.
        self.worker.stop()
        with self.lock:
            if self.worker.process.poll() is not None:
                self.worker = Worker(self.language, self.cwd, self.env)
            self.global_env_loaded = False

    def stop(self):
        self.removed = True
        self.worker.stop()

    def execute(self, code, env_vars, global_env):
        """Yields the execution's messages; the caller must run the generator to its end (or
        close it, which interrupts the cell and waits for the worker to be ready again)."""
        with self.lock:
            if self.worker.process.poll() is not None:
                # It ended between executions (a cell's thread may have ended it).
                self.replace_worker()
            worker = self.worker
            marker = "\x1e" + secrets.token_hex(16) + "\x1e"
            with worker.marker_lock:
                worker.marker = marker
            try:
                if global_env is not None and not self.global_env_loaded:
                    worker.send({"kind": "setenv", "env": global_env})
                    self.global_env_loaded = True
                worker.send({"kind": "execute", "code": code, "env_vars": env_vars,
                             "marker": marker})
            except (OSError, ValueError):
                # Its pipe is gone (the worker ended, or the context was removed).
                self.replace_worker()
                yield ENDED
                return
            progress = {"done": False, "ended": False}
            finished = False
            try:
                yield from self.stream(worker, progress)
                finished = True
            finally:
                if not finished and not progress["ended"] and worker.process.poll() is None:
                    self.abandon(worker, progress)

    def abandon(self, worker, progress):
        """What is left of an execution whose client went away: the cell is interrupted if it
        still runs, and its output drained, so the next execution starts clean."""
        if not progress["done"]:
            worker.interrupt()
        waited = 0
        for message in self.stream(worker, progress):
            if message["type"] == "keepalive":
                waited += 1
                # A cell deaf to the interrupt costs the context its state.
                if waited == 2:
                    worker.stop()
                if waited > 3:
                    return

    def stream(self, worker, progress):
        done = progress["done"]
        stdout_done, stderr_done = "stdout" in worker.closed, "stderr" in worker.closed
        # Output read before the worker numbered the execution waits for that number, which
        # the SDKs expect first.
        numbered, early = False, []
        while not (done and stdout_done and stderr_done):
            try:
                kind, value = worker.events.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                yield {"type": "keepalive"}
                continue
            if kind in ("stdout", "stderr"):
                message = {"type": kind, "text": value, "timestamp": now()}
                if numbered:
                    yield message
                else:
                    early.append(message)
            elif kind == "stdout_marker":
                stdout_done = True
            elif kind == "stderr_marker":
                stderr_done = True
            elif kind == "reply":
                if value.get("type") == "done":
                    done = progress["done"] = True
                else:
                    yield value
                if not numbered:
                    numbered = True
                    yield from early
                    early.clear()
            elif kind == "stdout_closed":
                worker.closed.add("stdout")
                stdout_done = True
            elif kind == "stderr_closed":
                worker.closed.add("stderr")
                stderr_done = True
            elif kind == "ended":
                # The worker died mid-cell, its replies all in. A fresh one first, so the
                # context is right even if this client is gone; then what it still printed.
                progress["ended"] = True
                self.replace_worker()
                yield from early
                yield from last_output(worker)
                yield ENDED
                return


def last_output(worker):
    """The output a dead worker's pipes still hold, briefly waited for."""
    deadline = time.monotonic() + 0.5
    while worker.closed != {"stdout", "stderr"}:
        try:
            kind, value = worker.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return
        if kind in ("stdout", "stderr"):
            yield {"type": kind, "text": value, "timestamp": now()}
        elif kind.endswith("_closed"):
            worker.closed.add(kind[: -len("_closed")])


class Contexts:
    """Every context, and the default one per language."""

    def __init__(self, default_cwd):
        self.default_cwd = default_cwd
        self.lock = threading.Lock()
        self.by_id = {}
        self.defaults = {}

    def create(self, language=None, cwd=None):
        language = normalise(language)
        if language not in LANGUAGES:
            raise UnknownLanguage(f"language {language!r} is not supported (python, javascript)")
        cwd = cwd or self.default_cwd
        if not os.path.isdir(cwd):
            raise FileNotFoundError(f"cwd {cwd!r} is not a directory")
        context = Context(language, cwd, dict(os.environ))
        with self.lock:
            self.by_id[context.id] = context
        return context

    def default(self, language):
        language = normalise(language)
        with self.lock:
            context = self.defaults.get(language)
        if context is not None:
            return context
        context = self.create(language)
        with self.lock:
            # Two first executions at once: one default wins, the other is dropped.
            if language in self.defaults:
                self.by_id.pop(context.id, None)
                extra, context = context, self.defaults[language]
                extra.stop()
            else:
                self.defaults[language] = context
        return context

    def get(self, context_id):
        with self.lock:
            if context_id == "default":
                return self.defaults.get("python")
            return self.by_id.get(context_id)

    def listed(self):
        with self.lock:
            return [context.describe() for context in self.by_id.values()]

    def remove(self, context_id):
        with self.lock:
            context = self.by_id.pop(context_id, None)
            if context is None:
                return False
            for language, default in list(self.defaults.items()):
                if default is context:
                    del self.defaults[language]
        context.stop()
        return True

    def stop_all(self):
        with self.lock:
            contexts = list(self.by_id.values())
            self.by_id.clear()
            self.defaults.clear()
        for context in contexts:
            context.stop()
