#!/usr/bin/env python3
"""A coppiced restart seen through the unmodified E2B Python SDK.

`setup` creates a sandbox, writes a file and starts a streaming command, then prints
`STATE <sandbox id> <pid>` while the stream is still open (the daemon is killed meanwhile).
`verify <sandbox id> <pid>` checks, after the restart, that the sandbox is listed and
reachable, its file intact, and the command still finishing with its whole output.
"""
import sys
import threading

from e2b import CommandExitException, Sandbox

from checks import check, finish, step

PAYLOAD = "survives the daemon\n"


def setup():
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
    print(f"STATE {sbx.sandbox_id} {handle.pid}", flush=True)
    # Keep streaming until the test kills the daemon (and then this process).
    threading.Event().wait(30)
    return 0


def verify(sid, pid):
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
    return finish()


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        sys.exit(setup())
    sys.exit(verify(sys.argv[2], sys.argv[3]))
