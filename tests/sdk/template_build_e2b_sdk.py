#!/usr/bin/env python3
"""E2B's template-build API driven by the unmodified SDK's `Template.build`.

A template recorded with `Template()` (a Debian base, ENV, RUN as root and as the user, an
apt package, WORKDIR, COPY of a file and a directory from a local context, USER, and a
start command with a ready check) is built by coppice, with the build's log streamed to
the SDK; a sandbox from it has all of it. A rebuild under the same name replaces it (the
unchanged steps from the cache); a failing step raises `BuildException` with its output;
bases coppice does not pull are refused saying so.
"""
import os
import tempfile
import time

from e2b import Sandbox, Template, wait_for_file
from e2b.exceptions import BuildException

from checks import check, finish, step
from control_api import call

NAME = "e2b-built"


def recorded(context, marker):
    return (
        Template(file_context_path=context)
        .from_debian_image("bookworm")
        .set_envs({"GREETING": "hello"})
        .apt_install(["jq"])
        .run_cmd("echo \"$GREETING from $(whoami)\" > /home/user/greeting")
        .copy("site", "/home/user/", user="root:user", mode=0o640)
        .set_workdir("/opt/app")
        .copy("hello.txt", "/opt/app/")
        .copy("site", "/opt/app/site", mode=0o640)
        .run_cmd(f"echo {marker} > marker")
        .set_start_cmd("sh -c 'echo up > /tmp/started; exec sleep infinity'",
                       wait_for_file("/tmp/started"))
    )


def main():
    with tempfile.TemporaryDirectory() as context:
        with open(os.path.join(context, "hello.txt"), "w") as f:
            f.write("copied\n")
        os.makedirs(os.path.join(context, "site", "css"))
        with open(os.path.join(context, "site", "index.html"), "w") as f:
            f.write("<h1>hi</h1>\n")
        with open(os.path.join(context, "site", "css", "a.css"), "w") as f:
            f.write("h1 {}\n")
        first = build(recorded(context, "one"), "first build", tags=["v1"])
        check_sandbox(NAME, "one")
        second = build(recorded(context, "two"), "rebuild with one step changed")
        check_sandbox(NAME, "two")
        check_sandbox(f"{NAME}:v1", "one")
        tags()
        if first is not None and second is not None:
            check("the rebuild reuses the unchanged steps",
                  second[1] < first[1] and any("(cached)" in line for line in second[0]),
                  f"{first[1]:.1f} s, then {second[1]:.1f} s")
    status, kept = call("GET", f"/templates/{NAME}/build-log")
    check("the build's log is kept with the template",
          status == 200 and any(line.startswith(f"==> template {NAME} ready")
                                for line in kept.get("lines", [])), repr(kept)[:300])
    check("Template.exists sees the template", step("exists", lambda: Template.exists(NAME)))
    check("and not one never built",
          step("exists (missing)", lambda: Template.exists("never-built")) is False)
    failing()
    return finish()


def build(template, what, tags=None):
    lines = []
    began = time.monotonic()
    built = step(what, lambda: Template.build(
        template, NAME, tags=tags, on_build_logs=lambda entry: lines.append(entry.message)))
    took = time.monotonic() - began
    print(f"{what}: {took:.1f} s", flush=True)
    check(f"{what} succeeds", built is not None)
    check(f"{what} streams the build's log",
          any("==> step" in line for line in lines), repr(lines[-5:]))
    return (lines, took) if built is not None else None


def tags():
    listed = step("get_tags", lambda: Template.get_tags(NAME))
    names = sorted(t.tag for t in listed or [])
    check("get_tags lists the name's tags", names == ["latest", "v1"], repr(listed))
    step("assign_tags", lambda: Template.assign_tags(f"{NAME}:v1", ["stable"]))
    stable = step("create from the new tag",
                  lambda: Sandbox.create(template=f"{NAME}:stable", timeout=120))
    if stable is not None:
        marker = step("marker", lambda: stable.commands.run("cat marker"))
        check("a tag assigned from another stands for the same build",
              marker is not None and marker.stdout.strip() == "one", repr(marker))
        step("kill", lambda: stable.kill())
    step("remove_tags", lambda: Template.remove_tags(NAME, ["stable"]))
    after = sorted(t.tag for t in step("get_tags", lambda: Template.get_tags(NAME)) or [])
    check("remove_tags removes the tag", after == ["latest", "v1"], repr(after))


def check_sandbox(template, marker):
    sandbox = step("create", lambda: Sandbox.create(template=template, timeout=120))
    if sandbox is None:
        return
    try:
        run = lambda cmd, **kw: step(cmd, lambda: sandbox.commands.run(cmd, **kw))
        where = run("pwd; whoami")
        check("the sandbox starts in the WORKDIR as the user",
              where is not None and where.stdout.split() == ["/opt/app", "user"], repr(where))
        jq = run("echo '{\"a\": 5}' | jq .a")
        check("the apt package is installed", jq is not None and jq.stdout.strip() == "5",
              repr(jq))
        greeting = run("cat /home/user/greeting; echo ${GREETING:-unset}")
        check("RUN saw the ENV and ran as the user; ENV held during the build only",
              greeting is not None and greeting.stdout.split("\n")[:2]
              == ["hello from user", "unset"], repr(greeting))
        copied = run("cat hello.txt site/index.html site/css/a.css; stat -c '%U %a' hello.txt "
                     "site/index.html; cat marker")
        home = run("stat -c '%U %G %a' /home/user /home/user/greeting /home/user/index.html "
                   "/home/user/css/a.css")
        check("COPY into an existing directory leaves what was there, and takes its owner "
              "(user:group) and mode",
              home is not None and home.stdout.split("\n") == [
                  "user user 755", "user user 644", "root user 640", "root user 640", ""],
              repr(home))
        check("COPY brought the file and the directory's contents, owned by the user",
              copied is not None and copied.stdout.split("\n") == [
                  "copied", "<h1>hi</h1>", "h1 {}", "user 644", "user 640", marker, ""],
              repr(copied))
        started = run("cat /tmp/started")
        check("the start command ran before the create answered",
              started is not None and started.stdout.strip() == "up", repr(started))
    finally:
        step("kill", lambda: sandbox.kill())


def failing():
    broken = (Template().from_debian_image("bookworm")
              .run_cmd("echo about to fail; exit 3"))
    try:
        Template.build(broken, "e2b-broken")
        check("a failing step fails the build", False, "it built")
    except BuildException as e:
        check("a failing step fails the build with its output", "about to fail" in str(e),
              str(e))
    check("and leaves no template",
          step("exists (broken)", lambda: Template.exists("e2b-broken")) is False)
    try:
        Template.build(Template().from_debian_image("bookworm").run_cmd("true"), "python")
        check("a shipped template's name is refused", False, "it built")
    except BuildException as e:
        check("a shipped template's name is refused", "coppice ships" in str(e), str(e))
    pulled = Template().from_image("ubuntu:22.04").run_cmd("true")
    try:
        Template.build(pulled, "e2b-ubuntu")
        check("a base coppice would have to pull is refused", False, "it built")
    except BuildException as e:
        check("a base coppice would have to pull is refused, saying what to do",
              "coppice template import" in str(e), str(e))


if __name__ == "__main__":
    raise SystemExit(main())
