#!/usr/bin/env python3
"""Directory snapshots (a coppice extension) around the unmodified E2B Python SDK: a directory
of one sandbox captured as a tar with its SHA-256, downloaded, restored into another sandbox
and over itself, and bad requests refused.

Needs E2B_API_KEY and E2B_API_URL (and E2B_SANDBOX_URL) pointing at coppiced. Prints one
PASS/FAIL line per check and exits 1 if any check failed.
"""
import hashlib
import io
import sys
import tarfile

from e2b import Sandbox

from checks import check, finish, step
from control_api import call



def main():
    source = step("create source", lambda: Sandbox.create(timeout=300))
    target = step("create target", lambda: Sandbox.create(timeout=300))
    if source is None or target is None:
        return finish()
    blob = bytes(range(256)) * 1024
    step("write main.py", lambda: source.files.write("/home/user/project/src/main.py", "print('hi')\n"))
    step("write blob", lambda: source.files.write("/home/user/project/data/blob.bin", blob))
    step("links and modes", lambda: source.commands.run(
        "cd /home/user/project && ln -s src/main.py link && ln -s /usr/bin/python3 py"
        " && mkdir empty && chmod 750 src"))

    status, snap = call("POST", f"/sandboxes/{source.sandbox_id}/directory-snapshots", {"path": "/home/user/project"})
    check("capture answers 201", status == 201, repr(snap))
    if status != 201:
        return finish()
    sid = snap["snapshotID"]
    check("capture reports its hash, size and entries",
          len(snap["sha256"]) == 64 and snap["sizeBytes"] > len(blob) and snap["entries"] == 7, repr(snap))

    status, tar = call("GET", f"/directory-snapshots/{sid}/archive")
    check("download answers 200", status == 200, repr(tar)[:200])
    check("the download's SHA-256 is the recorded one", hashlib.sha256(tar).hexdigest() == snap["sha256"])
    names = sorted(tarfile.open(fileobj=io.BytesIO(tar)).getnames()) if status == 200 else []
    check("the tar holds the directory's entries, relative to it",
          names == ["data", "data/blob.bin", "empty", "link", "py", "src", "src/main.py"], repr(names))

    status, listed = call("GET", "/directory-snapshots")
    check("listed", status == 200 and sid in [s["snapshotID"] for s in listed], repr(listed))
    status, info = call("GET", f"/directory-snapshots/{sid}")
    check("described", status == 200 and info["path"] == "/home/user/project"
          and info["sandboxID"] == source.sandbox_id, repr(info))

    step("kill source", lambda: source.kill())
    status, restored = call("POST", f"/directory-snapshots/{sid}/restore",
                            {"sandboxID": target.sandbox_id, "path": "/home/user/restored"})
    check("restore into another sandbox after the source is gone", status == 200 and restored["entries"] == 7,
          repr(restored))
    text = step("read restored", lambda: target.files.read("/home/user/restored/src/main.py"))
    check("restored content", text == "print('hi')\n", repr(text))
    back = step("read blob", lambda: target.files.read("/home/user/restored/data/blob.bin", format="bytes"))
    check("restored binary content", back == blob)
    links = step("links", lambda: target.commands.run(
        "cd /home/user/restored && readlink link py && stat -c '%a %U' src src/main.py"))
    check("symlinks, modes and owners come back",
          links is not None and links.stdout == "src/main.py\n/usr/bin/python3\n750 user\n644 user\n",
          repr(links.stdout if links else None))

    step("change", lambda: target.files.write("/home/user/restored/src/main.py", "changed"))
    status, _ = call("POST", f"/directory-snapshots/{sid}/restore",
                     {"sandboxID": target.sandbox_id, "path": "/home/user/restored"})
    check("restoring over changed files puts them back",
          status == 200 and step("read", lambda: target.files.read("/home/user/restored/src/main.py")) == "print('hi')\n")

    for path, why in [("/proc", "a reserved path"), ("relative", "a relative path"), ("/home/user/../etc", "'..'"),
                      ("/home/user/restored/src/main.py", "a file"), ("/home/user/nothing", "a missing directory")]:
        status, error = call("POST", f"/sandboxes/{target.sandbox_id}/directory-snapshots", {"path": path})
        check(f"capturing {why} is 400 with a message", status == 400 and "message" in error, f"{status} {error!r}")
    status, _ = call("POST", f"/directory-snapshots/{sid}/restore", {"sandboxID": "nosuchsandbox0000000"})
    check("restoring into an unknown sandbox is 404", status == 404)
    status, _ = call("GET", "/directory-snapshots/nosuch")
    check("an unknown snapshot is 404", status == 404)

    status, _ = call("DELETE", f"/directory-snapshots/{sid}")
    check("delete answers 204", status == 204)
    status, _ = call("DELETE", f"/directory-snapshots/{sid}")
    check("deleting again is 404", status == 404)
    step("kill target", lambda: target.kill())
    return finish()


if __name__ == "__main__":
    sys.exit(main())
