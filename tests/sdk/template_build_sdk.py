#!/usr/bin/env python3
"""Templates built from recipes, seen through the unmodified E2B Python SDK.

Builds a recipe (a Debian root from the archive with an extra package, a pip package, a
run step, an environment variable) through `POST /templates/builds`, reading its streamed
log, and creates a sandbox from it with the SDK. Then a rebuild with one more pip package
reuses the Debian step (both build times are printed), and a failing run step and an
unknown Debian package end their builds with the failing step's output and leave no
template. Needs the E2B_* variables; the build reaches the Debian archive and PyPI.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

from e2b import Sandbox

from checks import check, finish, step
from control_api import call


def build(recipe):
    """(log lines, final record) of one streamed build."""
    api = os.environ["E2B_API_URL"].rstrip("/")
    request = urllib.request.Request(api + "/templates/builds", data=json.dumps(recipe).encode(), method="POST",
                                     headers={"X-API-KEY": os.environ["E2B_API_KEY"],
                                              "Content-Type": "application/json"})
    lines, last = [], None
    try:
        with urllib.request.urlopen(request, timeout=1800) as response:
            for raw in response:
                record = json.loads(raw)
                if "log" in record:
                    lines.append(record["log"])
                else:
                    last = record
    except urllib.error.HTTPError as e:
        last = {"status": "refused", "code": e.code, "message": e.read().decode(errors="replace")}
    return lines, last


def recipe(name, pip, run=(), packages=("jq", "python3-pip")):
    return {"templateID": name, "debian": {"release": "bookworm", "packages": list(packages)},
            "pip": list(pip), "run": list(run), "env": {"GREETING": "built from a recipe"}}


def main():
    began = time.time()
    log, last = build(recipe("recipe-a", ["six"], ["python3 -c 'import six' && echo imported-six"]))
    first = time.time() - began
    print(f"first build: {first:.1f} s", flush=True)
    check("the recipe builds", last is not None and last.get("status") == "ready", f"{last} {log[-15:]}")
    check("the log shows each step", any(line.startswith("==> step 1/3: debian bookworm") for line in log), str(log[:5]))
    check("a run step's output is in the log", any("imported-six" in line for line in log), str(log[-10:]))
    if last is None or last.get("status") != "ready":
        return finish()

    sbx = step("create from the built template", lambda: Sandbox.create(template="recipe-a", timeout=120))
    if sbx is not None:
        try:
            jq = step("jq", lambda: sbx.commands.run("echo '{\"a\": 7}' | jq .a"))
            check("the extra Debian package is installed", jq is not None and jq.stdout.strip() == "7", repr(jq))
            six = step("six", lambda: sbx.commands.run("python3 -c 'import six; print(six.__name__)'"))
            check("the pip package is installed", six is not None and six.stdout.strip() == "six", repr(six))
            env = step("env", lambda: sbx.commands.run("echo $GREETING"))
            check("the recipe's environment is set", env is not None and env.stdout.strip() == "built from a recipe")
            who = step("whoami", lambda: sbx.commands.run("id -un"))
            check("commands run as the recipe root's user", who is not None and who.stdout.strip() == "user")
        finally:
            sbx.kill()

    began = time.time()
    log, last = build(recipe("recipe-b", ["six", "idna"], ["python3 -c 'import six' && echo imported-six"]))
    second = time.time() - began
    print(f"rebuild with one more pip package: {second:.1f} s (first build {first:.1f} s)", flush=True)
    check("the rebuild succeeds", last is not None and last.get("status") == "ready", f"{last} {log[-15:]}")
    check("the rebuild reuses the Debian step", any("debian bookworm" in line and line.endswith("(cached)") for line in log),
          str(log[:5]))

    log, last = build(recipe("recipe-c", [], ["echo failing-step-output; exit 3"]))
    message = (last or {}).get("message", "")
    check("a failing run step ends the build", (last or {}).get("status") == "error", str(last))
    check("with that step's output", "run[0]" in message and "failing-step-output" in message, message)
    status, _ = call("GET", "/templates/recipe-c")
    check("and leaves no template", status == 404, str(status))

    log, last = build(recipe("recipe-d", [], [], packages=("no-such-package-coppice",)))
    message = (last or {}).get("message", "")
    check("an unknown Debian package ends the build naming it",
          (last or {}).get("status") == "error" and "no-such-package-coppice" in message, f"{last} {log[-5:]}")
    status, _ = call("GET", "/templates/recipe-d")
    check("and leaves no template", status == 404, str(status))

    _, listed = call("GET", "/templates")
    names = [t["templateID"] for t in listed or []]
    check("the cache's steps are not listed", not any(n.startswith("build-") for n in names), str(names))
    status, body = call("POST", "/templates/builds", {"templateID": "recipe-a", "debian": {"release": "bookworm"}})
    check("a taken name is refused before building", status == 409, f"{status} {body}")
    status, body = call("POST", "/templates/builds", {"templateID": "x", "debian": {"release": "bookworm"},
                                                      "pip": ["--index-url=http://elsewhere"]})
    check("a pip option passed as a package is refused", status == 400 and "pip" in str(body), f"{status} {body}")
    for name in ("recipe-a", "recipe-b"):
        call("DELETE", f"/templates/{name}")
    return finish()


if __name__ == "__main__":
    sys.exit(main())
