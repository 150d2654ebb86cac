#!/usr/bin/env python3
"""A coppiced restart seen through the unmodified E2B Python SDK.

`setup` creates a sandbox, writes a file and starts a streaming command; it also pauses a
second sandbox whose counter process lives in memory; then it prints
`STATE <sandbox id> <pid> <paused id> <count>` while the stream is still open (the daemon is
killed meanwhile). `verify <sandbox id> <pid> <paused id> <count>` checks, after the restart,
that the sandbox is listed and reachable, its file intact, the command still finishing with
its whole output, and that the paused sandbox is still paused and resumes with its process's
memory.
"""
import sys
import threading
import time

from e2b import CommandExitException, Sandbox, SandboxState

from checks import check, finish, step
from counter import COUNTER

PAYLOAD = "survives the daemon\n"


def setup():
    paused = Sandbox.create(timeout=600, metadata={"restart": "yes"})
    paused.commands.run(COUNTER, background=True, timeout=0)
    time.sleep(0.5)
    count = int(paused.files.read("/tmp/counter").strip() or "0")
    paused.pause()
    sbx = Sandbox.create(timeout=600, metadata={"restart": "yes"})
    sbx.files.write("/home/user/keep.txt", PAYLOAD)
    handle = sbx.commands.run("for i in $(seq 1 40); do echo line$i; sleep 0.1; done", background=True, timeout=0)
    seen = threading.Event()

    def stream():
        try:
            handle.wait(on_stdout=lambda _: seen.set())
        except Exception:  # noqa: BLE001 - the daemon dies under this stream on purpose
            pass

    threading.Thread(target=stream, daemon=True).start()
    seen.wait(10)
    print(f"STATE {sbx.sandbox_id} {handle.pid} {paused.sandbox_id} {count}", flush=True)
    # Keep streaming until the test kills the daemon (and then this process).
    threading.Event().wait(30)
    return 0


def verify(sid, pid, paused_id, count):
    listed = step("list", lambda: [s.sandbox_id for s in Sandbox.list().next_items()]) or []
    check("sandbox listed after restart", sid in listed, repr(listed))
    sbx = step("connect", lambda: Sandbox.connect(sid))
    check("file intact after restart", sbx is not None and step("read", lambda: sbx.files.read("/home/user/keep.txt")) == PAYLOAD)
    r = step("run", lambda: sbx.commands.run("echo alive"))
    check("commands run after restart", r is not None and r.stdout == "alive\n", repr(r))
    handle = step("reconnect", lambda: sbx.commands.connect(int(pid)))
    try:
        result = handle.wait()
        check("the streaming command finished with all its output", "line40\n" in result.stdout, repr(result))
    except CommandExitException as e:
        check("the streaming command finished with all its output", False, repr(e))
    except Exception as e:  # noqa: BLE001
        check("the streaming command finished with all its output", False, repr(e))
    step("kill", lambda: sbx.kill())

    info = step("paused info", lambda: Sandbox.get_info(paused_id))
    check("a paused sandbox stays paused across the restart", info is not None and info.state == SandboxState.PAUSED, repr(info))
    resumed = step("resume", lambda: Sandbox.connect(paused_id))
    now = int((step("read counter", lambda: resumed.files.read("/tmp/counter")) or "0").strip() or "0") if resumed else 0
    check("it resumes with its process's memory", now >= int(count), f"{count} -> {now}")
    if resumed:
        step("kill paused", lambda: resumed.kill())
    return finish()


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        sys.exit(setup())
    sys.exit(verify(*sys.argv[2:6]))
