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

NAME = "e2b-built"


def recorded(context, marker):
    return (
        Template(file_context_path=context)
        .from_debian_image("bookworm")
        .set_envs({"GREETING": "hello"})
        .apt_install(["jq"])
        .run_cmd("echo \"$GREETING from $(whoami)\" > /home/user/greeting")
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
        first = build(recorded(context, "one"), "first build")
        check_sandbox("one")
        second = build(recorded(context, "two"), "rebuild with one step changed")
        check_sandbox("two")
        if first is not None and second is not None:
            check("the rebuild reuses the unchanged steps",
                  second[1] < first[1] and any("(cached)" in line for line in second[0]),
                  f"{first[1]:.1f} s, then {second[1]:.1f} s")
    check("Template.exists sees the template", step("exists", lambda: Template.exists(NAME)))
    check("and not one never built",
          step("exists (missing)", lambda: Template.exists("never-built")) is False)
    failing()
    return finish()


def build(template, what):
    lines = []
    began = time.monotonic()
    built = step(what, lambda: Template.build(
        template, NAME, on_build_logs=lambda entry: lines.append(entry.message)))
    took = time.monotonic() - began
    print(f"{what}: {took:.1f} s", flush=True)
    check(f"{what} succeeds", built is not None)
    check(f"{what} streams the build's log",
          any("==> step" in line for line in lines), repr(lines[-5:]))
    return (lines, took) if built is not None else None


def check_sandbox(marker):
    sandbox = step("create", lambda: Sandbox.create(template=NAME, timeout=120))
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
    pulled = Template().from_image("ubuntu:22.04").run_cmd("true")
    try:
        Template.build(pulled, "e2b-ubuntu")
        check("a base coppice would have to pull is refused", False, "it built")
    except BuildException as e:
        check("a base coppice would have to pull is refused, saying what to do",
              "coppice template import" in str(e), str(e))


if __name__ == "__main__":
    raise SystemExit(main())
