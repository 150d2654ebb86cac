#!/usr/bin/env python3
"""envd through the unmodified E2B Python SDK, against envd inside a real coppice sandbox.

Needs E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL pointing at a coppice gateway. Prints one PASS/FAIL line
per check and exits 1 if any check failed.
"""
import asyncio
import hashlib
import io
import json
import os
import sys
import time
import urllib.request

from e2b import AsyncSandbox, CommandExitException, FileType, NotFoundException, Sandbox
from e2b.sandbox.commands.command_handle import PtySize

from checks import check, finish, step


def commands(sbx):
    r = step("run echo", lambda: sbx.commands.run("echo hello"))
    check("stdout", r is not None and r.stdout == "hello\n" and r.exit_code == 0, repr(r))
    try:
        sbx.commands.run("echo out; echo err 1>&2; exit 3")
        check("non-zero exit raises", False, "no exception")
    except CommandExitException as e:
        check("non-zero exit raises", e.exit_code == 3 and e.stdout == "out\n" and e.stderr == "err\n", repr(e))
    r = step("defaults", lambda: sbx.commands.run("whoami; pwd; echo $HOME; id -u"))
    check("default user/cwd/home", r is not None and r.stdout == "user\n/home/user\n/home/user\n1000\n", repr(r))
    r = step("root user", lambda: sbx.commands.run("whoami; echo $HOME", user="root"))
    check("user=root", r is not None and r.stdout == "root\n/root\n", repr(r))
    r = step("envs", lambda: sbx.commands.run("echo $SBX_ENV-$CMD_ENV-$E2B_SANDBOX", envs={"CMD_ENV": "b"}))
    check("sandbox and command env vars", r is not None and r.stdout == "a-b-true\n", repr(r))
    r = step("cwd", lambda: sbx.commands.run("pwd", cwd="/tmp"))
    check("cwd honoured", r is not None and r.stdout == "/tmp\n", repr(r))
    try:
        sbx.commands.run("true", cwd="/does/not/exist")
        check("missing cwd raises", False, "no exception")
    except Exception as e:  # noqa: BLE001
        check("missing cwd raises", "does not exist" in str(e), repr(e))

    expected = "".join(f"{i}\n" for i in range(1, 150001))
    r = step("1 MB output", lambda: sbx.commands.run("seq 1 150000"))
    check("1 MB output intact", r is not None and r.stdout == expected, f"{len(r.stdout) if r else None} bytes")

    stamps = []
    r = step("incremental", lambda: sbx.commands.run(
        "for i in 1 2 3 4; do echo tick$i; sleep 0.3; done",
        on_stdout=lambda line: stamps.append((time.monotonic(), line))))
    spread = stamps[-1][0] - stamps[0][0] if len(stamps) >= 2 else 0
    check("on_stdout arrives incrementally", len(stamps) >= 4 and spread > 0.6, f"{stamps}")

    h = sbx.commands.run("sleep 120", background=True, timeout=0)
    procs = step("list", lambda: sbx.commands.list()) or []
    check("background visible in list", any(p.pid == h.pid for p in procs), repr(procs))
    check("kill background", step("kill", lambda: h.kill()) is True)
    try:
        h.wait()
        check("killed command ends non-zero", False, "no exception")
    except CommandExitException as e:
        check("killed command ends non-zero", e.exit_code != 0, repr(e))
    check("kill unknown pid -> False", step("kill404", lambda: sbx.commands.kill(999999)) is False)

    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "piped\n")
    sbx.commands.close_stdin(h.pid)
    r = step("stdin wait", lambda: h.wait())
    check("send_stdin reaches the process", r is not None and r.stdout == "piped\n", repr(r))

    h = sbx.commands.run("cat", background=True, stdin=True)
    step("stream_input", lambda: sbx.commands.stream_input(h.pid, iter(["one\n", b"two\n"])))
    sbx.commands.close_stdin(h.pid)
    r = step("stream_input wait", lambda: h.wait())
    check("stream_input reaches the process", r is not None and r.stdout == "one\ntwo\n", repr(r))

    h = sbx.commands.run("sleep 0.5; echo early; sleep 1; echo late; exit 5", background=True, timeout=0)
    time.sleep(0.1)
    h.disconnect()
    again = sbx.commands.connect(h.pid)
    try:
        again.wait()
        check("reconnect by pid", False, "no exception for exit 5")
    except CommandExitException as e:
        check("reconnect by pid", e.exit_code == 5 and "late\n" in e.stdout, repr(e))


def pty(sbx):
    out = bytearray()
    ph = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(ph.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(ph.pid, b"stty size; echo pty-$((40+2)); exit\n")
    step("pty wait", lambda: ph.wait(on_pty=lambda b: out.extend(b)))
    check("pty input, output and resize", b"pty-42" in out and b"30 100" in out, repr(bytes(out[-300:])))
    ph = sbx.pty.create(PtySize(rows=24, cols=80))
    check("pty kill", step("pty kill", lambda: sbx.pty.kill(ph.pid)) is True)
    try:
        ph.wait()
        check("killed pty ends", False, "no exception")
    except CommandExitException as e:
        check("killed pty ends", e.exit_code != 0, repr(e))


def files(sbx):
    base = "/home/user/sdk"
    check("make_dir new", step("make_dir", lambda: sbx.files.make_dir(base)) is True)
    check("make_dir existing -> False", step("make_dir2", lambda: sbx.files.make_dir(base)) is False)
    w = step("write", lambda: sbx.files.write(f"{base}/a.txt", "hello file"))
    check("write returns path", w is not None and w.path == f"{base}/a.txt" and w.type == FileType.FILE, repr(w))
    check("read text", step("read", lambda: sbx.files.read(f"{base}/a.txt")) == "hello file")
    check("exists true", step("exists", lambda: sbx.files.exists(f"{base}/a.txt")) is True)
    check("exists false", step("exists2", lambda: sbx.files.exists(f"{base}/nope.txt")) is False)
    try:
        sbx.files.read(f"{base}/nope.txt")
        check("read missing raises NotFoundException", False)
    except NotFoundException:
        check("read missing raises NotFoundException", True)
    info = step("get_info", lambda: sbx.files.get_info(f"{base}/a.txt"))
    check("get_info size/type/owner", info is not None and info.size == 10 and info.type == FileType.FILE
          and info.owner == "user" and info.permissions.startswith("-rw"), repr(info))
    step("write with metadata", lambda: sbx.files.write(f"{base}/meta.txt", "m", metadata={"Owner": "me"}))
    info = step("get_info metadata", lambda: sbx.files.get_info(f"{base}/meta.txt"))
    check("file metadata round trip", info is not None and info.metadata == {"owner": "me"}, repr(info))
    step("remove meta", lambda: sbx.files.remove(f"{base}/meta.txt"))
    w = step("write nested", lambda: sbx.files.write(f"{base}/x/y/z.txt", "deep"))
    check("nested dirs created", step("read nested", lambda: sbx.files.read(f"{base}/x/y/z.txt")) == "deep")
    ws = step("write_files", lambda: sbx.files.write_files([
        {"path": f"{base}/m1.txt", "data": "1"}, {"path": f"{base}/sub/m2.txt", "data": b"2"}]))
    check("multi-file write_files", ws is not None and sorted(e.path for e in ws) == [f"{base}/m1.txt", f"{base}/sub/m2.txt"], repr(ws))
    names = sorted(e.name for e in (step("list", lambda: sbx.files.list(base)) or []))
    check("list depth 1", names == ["a.txt", "m1.txt", "sub", "x"], repr(names))
    paths = sorted(e.path for e in (step("list2", lambda: sbx.files.list(base, depth=3)) or []))
    check("list depth 3", f"{base}/sub/m2.txt" in paths and f"{base}/x/y/z.txt" in paths, repr(paths))
    mv = step("rename", lambda: sbx.files.rename(f"{base}/a.txt", f"{base}/b.txt"))
    check("rename", mv is not None and mv.path == f"{base}/b.txt", repr(mv))
    step("remove", lambda: sbx.files.remove(f"{base}/b.txt"))
    check("removed", step("exists3", lambda: sbx.files.exists(f"{base}/b.txt")) is False)

    blob = os.urandom(5 * 1024 * 1024)
    step("upload 5MiB", lambda: sbx.files.write(f"{base}/big.bin", blob))
    got = step("download 5MiB", lambda: sbx.files.read(f"{base}/big.bin", format="bytes"))
    check("5 MiB multipart round trip, equal SHA-256",
          got is not None and hashlib.sha256(bytes(got)).digest() == hashlib.sha256(blob).digest())
    step("upload octet-stream", lambda: sbx.files.write(f"{base}/big2.bin", io.BytesIO(blob)))
    r = step("sha via shell", lambda: sbx.commands.run(f"sha256sum {base}/big2.bin"))
    check("5 MiB octet-stream upload, equal SHA-256",
          r is not None and r.stdout.split()[0] == hashlib.sha256(blob).hexdigest(), repr(r))

    wh = sbx.files.watch_dir(base, include_entry=True)
    sbx.files.write(f"{base}/watched.txt", "x")
    time.sleep(1)
    evs = step("watch events", lambda: wh.get_new_events()) or []
    seen = [e for e in evs if e.name == "watched.txt"]
    check("watch_dir (polled) saw watched.txt with its entry",
          bool(seen) and any(e.entry is not None and e.entry.size == 1 for e in seen), repr(evs))
    wh.stop()


async def streamed_watch():
    sbx = await AsyncSandbox.create()
    seen = []
    handle = await sbx.files.watch_dir("/home/user", on_event=lambda e: seen.append(e.name), recursive=True)
    await sbx.files.make_dir("/home/user/streamed")
    await sbx.files.write("/home/user/streamed/s.txt", "s")
    await asyncio.sleep(1)
    await handle.stop()
    await sbx.kill()
    check("watch_dir (streamed, recursive) saw the new file", "streamed/s.txt" in seen, repr(seen))


def envd_token(sandbox_id):
    """The sandbox's envd token, as the control plane reports it (`GET /sandboxes/{id}`)."""
    request = urllib.request.Request(
        f"{os.environ['E2B_API_URL']}/sandboxes/{sandbox_id}",
        headers={"X-API-KEY": os.environ["E2B_API_KEY"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["envdAccessToken"]


def sandbox_side(sbx):
    token = envd_token(sbx.sandbox_id)
    get = "exec 3<>/dev/tcp/127.0.0.1/49983; printf 'GET {path} HTTP/1.0\\r\\n{auth}\\r\\n' >&3; cat <&3"
    m = step("metrics", lambda: sbx.commands.run(get.format(path="/metrics", auth=f"x-access-token: {token}\\r\\n")))
    check("envd /metrics reports memory and disk", m is not None and '"mem_total"' in m.stdout
          and '"disk_total"' in m.stdout, repr(m))
    m = step("metrics unauthorized", lambda: sbx.commands.run(get.format(path="/metrics", auth="")))
    check("envd /metrics needs the token", m is not None and " 401 " in m.stdout, repr(m))
    m = step("envs", lambda: sbx.commands.run(get.format(path="/envs", auth=f"x-access-token: {token}\\r\\n")))
    check("envd /envs lists the sandbox variables", m is not None and '"SBX_ENV":"a"' in m.stdout, repr(m))
    r = step("tcp 49983", lambda: sbx.commands.run(
        "exec 3<>/dev/tcp/127.0.0.1/49983; printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3; head -1 <&3"))
    check("envd serves TCP 49983 inside the sandbox", r is not None and "204" in r.stdout, repr(r))
    r = step("init hidden", lambda: sbx.commands.run(
        "exec 3<>/dev/tcp/127.0.0.1/49983; printf 'POST /init HTTP/1.0\\r\\ncontent-length: 2\\r\\n\\r\\n{}' >&3; head -1 <&3"))
    check("/init is not reachable from inside", r is not None and " 204 " not in r.stdout, repr(r))
    step("kill envd", lambda: sbx.commands.run("(sleep 0.3; pkill -KILL -f '^coppice-envd') >/dev/null 2>&1 &", user="root"))
    time.sleep(0.6)
    back = None
    for _ in range(50):
        try:
            back = sbx.commands.run("echo back").stdout
            break
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    check("envd restarts after it dies", back == "back\n", repr(back))
    m = step("envs after restart", lambda: sbx.commands.run(get.format(path="/envs", auth="")))
    check("a restarted envd still requires the token", m is not None and " 401 " in m.stdout, repr(m))
    r = step("env after restart", lambda: sbx.commands.run("echo $SBX_ENV"))
    check("a restarted envd keeps the sandbox variables", r is not None and r.stdout == "a\n", repr(r))


def main():
    sbx = Sandbox.create(envs={"SBX_ENV": "a"}, metadata={"suite": "envd"})
    check("sandbox is running", sbx.is_running())
    commands(sbx)
    pty(sbx)
    files(sbx)
    asyncio.run(streamed_watch())
    sandbox_side(sbx)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
