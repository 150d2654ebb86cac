#!/usr/bin/env python3
"""Persistent volumes through the unmodified E2B Python SDK: the Volume API, its content API,
and volume data that outlives the sandboxes mounting it.

Needs E2B_API_KEY, E2B_API_URL, E2B_SANDBOX_URL and E2B_VOLUME_API_URL pointing at coppiced.
Prints one PASS/FAIL line per check and exits 1 if any check failed.
"""
import sys
import uuid

from e2b import Sandbox, Volume

from checks import check, finish, step

RUN = uuid.uuid4().hex[:8]
NAME = f"data-{RUN}"


def raises(fn):
    """The exception `fn` raised, or None."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return e
    return None


def content_api(vol):
    entry = step("write_file", lambda: vol.write_file("/seed/hello.txt", "from the API", force=True))
    check("write_file makes parents with force and reports a file",
          entry is not None and entry.type == "file" and entry.size == 12 and entry.path == "/seed/hello.txt",
          repr(entry))
    check("new files belong to the sandbox user (1000)", entry is not None and (entry.uid, entry.gid) == (1000, 1000),
          repr(entry))
    made = step("make_dir", lambda: vol.make_dir("/made"))
    check("make_dir", made is not None and made.type == "directory", repr(made))
    check("make_dir of an existing directory fails", raises(lambda: vol.make_dir("/made")) is not None)
    top = step("list", lambda: sorted(e.name for e in vol.list("/"))) or []
    check("list / shows the top level", top == ["made", "seed"], repr(top))
    deep = step("list depth 2", lambda: sorted(e.path for e in vol.list("/", depth=2))) or []
    check("list depth 2 descends", deep == ["/made", "/seed", "/seed/hello.txt"], repr(deep))
    check("read_file", step("read", lambda: vol.read_file("/seed/hello.txt")) == "from the API")
    blob = bytes(range(256)) * 4096
    step("write binary", lambda: vol.write_file("/blob.bin", blob))
    check("a 1 MiB binary file round-trips", step("read binary", lambda: vol.read_file("/blob.bin", format="bytes")) == blob)
    changed = step("update_metadata", lambda: vol.update_metadata("/seed/hello.txt", mode=0o600))
    check("update_metadata sets the mode", changed is not None and changed.mode == 0o600, repr(changed))
    check("exists", step("exists", lambda: vol.exists("/seed/hello.txt")) is True)
    check("exists of a missing path is False", step("exists missing", lambda: vol.exists("/nope")) is False)
    check("a path with .. is refused", raises(lambda: vol.read_file("/../etc/passwd")) is not None)
    wrong = Volume(vol.volume_id, vol.name, token="not-the-token")
    check("a wrong token is refused", raises(lambda: wrong.list("/")) is not None)


def mounted(vol):
    sbx = step("create with the volume", lambda: Sandbox.create(volume_mounts={"/mnt/data": vol}))
    if sbx is None:
        return
    info = step("get_info", lambda: Sandbox.get_info(sbx.sandbox_id))
    mounts = [(m["name"], m["path"]) for m in (info.volume_mounts if info else [])]
    check("get_info lists the mount", mounts == [(NAME, "/mnt/data")], repr(mounts))
    seen = step("read in sandbox", lambda: sbx.files.read("/mnt/data/seed/hello.txt", user="root"))
    check("the sandbox sees the API's file", seen == "from the API", repr(seen))
    step("write in sandbox", lambda: sbx.commands.run("echo written by a sandbox > /mnt/data/from-sandbox.txt"))
    entry = step("stat", lambda: vol.get_info("/from-sandbox.txt"))
    check("the sandbox user's file is uid 1000 through the API",
          entry is not None and entry.uid == 1000 and entry.size == len("written by a sandbox\n"), repr(entry))
    step("plant a symlink", lambda: sbx.commands.run("ln -s / /mnt/data/rootlink"))
    check("a symlink planted by a sandbox does not lead out",
          raises(lambda: vol.read_file("/rootlink/etc/passwd")) is not None)
    link = step("stat link", lambda: vol.get_info("/rootlink"))
    check("the symlink is reported as one", link is not None and link.type == "symlink" and link.target == "/",
          repr(link))
    check("deleting a mounted volume is refused", raises(lambda: Volume.destroy(vol.volume_id)) is not None)
    step("kill", lambda: sbx.kill())

    again = step("create by name", lambda: Sandbox.create(volume_mounts={"/home/user/work": NAME}))
    if again is None:
        return
    text = step("read after kill", lambda: again.files.read("/home/user/work/from-sandbox.txt"))
    check("volume data survives the sandbox and is seen by the next one", text == "written by a sandbox\n", repr(text))
    check("the API reads what a sandbox wrote",
          step("read via API", lambda: vol.read_file("/from-sandbox.txt")) == "written by a sandbox\n")
    step("kill", lambda: again.kill())


def main():
    check("a bad volume name is refused", raises(lambda: Volume.create("bad name!")) is not None)
    vol = step("Volume.create", lambda: Volume.create(NAME))
    if vol is None:
        return finish()
    check("a volume has an id and a token", bool(vol.volume_id) and bool(vol.token))
    check("a second volume with the same name is refused", raises(lambda: Volume.create(NAME)) is not None)
    listed = step("Volume.list", lambda: [v.name for v in Volume.list()]) or []
    check("Volume.list shows it", NAME in listed, repr(listed))
    info = step("Volume.get_info", lambda: Volume.get_info(vol.volume_id))
    check("Volume.get_info", info is not None and info.name == NAME and info.token == vol.token, repr(info))
    connected = step("Volume.connect", lambda: Volume.connect(vol.volume_id))
    check("Volume.connect", connected is not None and connected.token == vol.token)
    check("a sandbox with an unknown volume is refused",
          raises(lambda: Sandbox.create(volume_mounts={"/mnt/x": f"nosuch-{RUN}"})) is not None)
    check("a mount on /proc is refused",
          raises(lambda: Sandbox.create(volume_mounts={"/proc/x": vol})) is not None)
    content_api(vol)
    mounted(vol)
    step("remove", lambda: vol.remove("/seed"))
    check("remove takes a directory and its files", step("exists", lambda: vol.exists("/seed")) is False)
    check("Volume.destroy", step("destroy", lambda: Volume.destroy(vol.volume_id)) is True)
    check("destroying it again answers False", step("destroy again", lambda: Volume.destroy(vol.volume_id)) is False)
    return finish()


if __name__ == "__main__":
    sys.exit(main())
