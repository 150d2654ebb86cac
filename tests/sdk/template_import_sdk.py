#!/usr/bin/env python3
"""Templates imported from OCI images, seen through the unmodified E2B Python SDK.

Builds an OCI image layout of its own in a temporary directory: a first layer with a small
userland copied from the host (bash and a few tools, with the shared libraries they and
coppice's own binaries load, named in COPPICE_BINARIES), and a second layer that whites out
a file, empties a directory with an opaque marker, adds files and a symlink. The image's
configuration names an environment, a user, a working directory and an entrypoint.

It imports the layout through `POST /templates/imports`, creates a sandbox from it with the
SDK, and checks the files, the whiteouts, the user, the directory, the environment and the
entrypoint. Then an image with one escaping entry is refused whole and never listed, and the
template is deleted. Needs the E2B_* variables; talks to nothing but the gateway.
"""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

from e2b import Sandbox

from checks import check, finish, step
from control_api import call

TOOLS = ["/bin/bash", "/bin/sh", "/bin/cat", "/bin/ls", "/usr/bin/id", "/bin/pwd", "/bin/sleep", "/usr/bin/env",
         "/bin/echo", "/usr/bin/test"]
PASSWD = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000:app:/app:/bin/bash\n"
GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:\n"
ENTRYPOINT = ["/bin/sh", "-c",
              "echo started as $(id -un):$(id -gn) in $(pwd) > /tmp/entrypoint.txt; exec sleep 100000"]


class Layer:
    """One layer's tar, in memory."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.names = set()

    def add(self, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", uid=0):
        if name in self.names:
            return
        self.names.add(name)
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, link, uid, uid
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        self.tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    def directory(self, name, mode=0o755, uid=0):
        parts = name.split("/")
        for n in range(1, len(parts) + 1):
            self.add("/".join(parts[:n]), tarfile.DIRTYPE, mode=mode if n == len(parts) else 0o755,
                     uid=uid if n == len(parts) else 0)

    def host_file(self, path):
        """`path` from the host, through every symlink on the way, at its real place."""
        parent = os.path.realpath(os.path.dirname(path))
        path = os.path.join(parent, os.path.basename(path))
        self.directory(parent.lstrip("/"))
        if os.path.islink(path):
            target = os.readlink(path)
            self.add(path.lstrip("/"), tarfile.SYMTYPE, link=target)
            self.host_file(target if target.startswith("/") else os.path.join(parent, target))
            return
        with open(path, "rb") as f:
            self.add(path.lstrip("/"), data=f.read(), mode=os.stat(path).st_mode & 0o777)

    def bytes(self, compress):
        self.tar.close()
        raw = self.buffer.getvalue()
        return gzip.compress(raw, compresslevel=1) if compress else raw


def libraries(binaries):
    found = set()
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        for line in out.splitlines():
            words = line.split()
            path = words[2] if "=>" in words and len(words) > 2 else words[0]
            if path.startswith("/"):
                found.add(path)
    return sorted(found)


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def write_layout(layout, layers, config):
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    descriptors = []
    for data in layers:
        digest, size = blob(layout, data)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    config_digest, config_size = blob(layout, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": config_size},
                "layers": descriptors}
    manifest_digest, manifest_size = blob(layout, json.dumps(manifest).encode())
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": manifest_digest, "size": manifest_size}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


def image_layers():
    base = Layer()
    for top in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink("/" + top):
            base.add(top, tarfile.SYMTYPE, link=os.readlink("/" + top))
    binaries = [b for b in os.environ.get("COPPICE_BINARIES", "").split(":") if b]
    for path in TOOLS + libraries(TOOLS + binaries):
        base.host_file(path)
    base.directory("etc")
    base.add("etc/passwd", data=PASSWD.encode())
    base.add("etc/group", data=GROUP.encode())
    base.add("etc/motd", data=b"whited out by the second layer\n")
    base.directory("data")
    base.add("data/old", data=b"hidden by the opaque marker\n")
    base.directory("app", uid=1000)
    for name in ("proc", "dev", "tmp", "run", "root"):
        base.directory(name, mode=0o1777 if name == "tmp" else 0o755)
    top = Layer()
    top.add("etc/.wh.motd")
    top.directory("data")
    top.add("data/.wh..wh..opq")
    top.add("data/new", data=b"new\n")
    top.add("app/hello.txt", data=b"hello from the image\n", uid=1000)
    top.add("app/link", tarfile.SYMTYPE, link="hello.txt", uid=1000)
    return [base.bytes(compress=True), top.bytes(compress=False)]


CONFIG = {"architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello from the config"],
                     "User": "app:staff", "WorkingDir": "/app", "Entrypoint": ENTRYPOINT}}


def run(sbx, command):
    result = step(command, lambda: sbx.commands.run(command, timeout=30))
    return result.stdout.strip() if result else None


def imported(workdir):
    layout = os.path.join(workdir, "layout")
    write_layout(layout, image_layers(), CONFIG)
    began = time.time()
    status, body = call("POST", "/templates/imports", {"templateID": "imported-img", "image": layout}, timeout=120)
    check("the image layout imports", status == 201, f"{status} {body}")
    print(f"import took {time.time() - began:.2f} s", flush=True)
    if status != 201:
        return
    check("the template keeps the image's user and directory",
          body.get("defaultUser") == "app" and body.get("defaultWorkdir") == "/app", json.dumps(body))
    check("the template starts the entrypoint", "sleep 100000" in (body.get("startCommand") or ""), json.dumps(body))
    status, again = call("POST", "/templates/imports", {"templateID": "imported-img", "image": layout}, timeout=120)
    check("a second import under the same name is refused", status == 409, f"{status} {again}")

    sbx = step("create from the imported template", lambda: Sandbox.create(template="imported-img", timeout=120))
    if sbx is None:
        return
    try:
        check("files of the image are there", run(sbx, "cat hello.txt") == "hello from the image")
        check("a symlink of the image is kept", run(sbx, "cat /app/link") == "hello from the image")
        check("processes run as the image's user", run(sbx, "id -un") == "app")
        check("in the image's working directory", run(sbx, "pwd") == "/app")
        check("with the image's environment", run(sbx, "echo $GREETING") == "hello from the config")
        check("a whiteout removed a file of the layer below",
              run(sbx, "test -e /etc/motd && echo present || echo gone") == "gone")
        check("an opaque directory hides what the layer below put there", run(sbx, "ls /data") == "new")
        entry = ""
        for _ in range(100):
            entry = run(sbx, "cat /tmp/entrypoint.txt 2>/dev/null || true")
            if entry:
                break
            time.sleep(0.1)
        check("the entrypoint runs as the image's user and group in its directory",
              entry == "started as app:staff in /app", entry)
    finally:
        sbx.kill()

    evil = os.path.join(workdir, "evil")
    bad = Layer()
    bad.add("app/ok.txt", data=b"fine\n")
    bad.add("../escaped", data=b"evil\n")
    write_layout(evil, [bad.bytes(compress=True)], CONFIG)
    status, body = call("POST", "/templates/imports", {"templateID": "evil-img", "image": evil})
    message = body.get("message", "") if isinstance(body, dict) else str(body)
    check("an image with an escaping entry is refused", status == 400 and "'..'" in message, f"{status} {body}")
    status, _ = call("GET", "/templates/evil-img")
    check("a refused image leaves no template", status == 404, str(status))
    _, listed = call("GET", "/templates")
    names = [t["templateID"] for t in listed or []]
    check("the list has the imported template and not the refused one",
          "imported-img" in names and "evil-img" not in names, str(names))

    status, _ = call("DELETE", "/templates/imported-img")
    check("an imported template can be deleted", status == 204, str(status))
    status, _ = call("GET", "/templates/imported-img")
    check("and is gone", status == 404, str(status))


def main():
    with tempfile.TemporaryDirectory() as workdir:
        imported(workdir)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
