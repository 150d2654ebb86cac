#!/usr/bin/env python3
"""The templates coppice ships, once built from their recipes, driven by the unmodified SDKs.

coppiced runs with `--shipped-templates build`: at start it makes stand-ins of `python` and
`code-interpreter-v1` over the host's `/usr`, then builds both from their recipes in the
background (a Debian root with numpy, pandas and matplotlib, shared by the two) and swaps
each in. This suite waits for that, then checks what the recipes promise: the `python`
template's packages, and the code interpreter's data stack with a matplotlib figure that
comes back as a PNG and decodes as one.
"""
import base64
import time

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeInterpreter

import png
from checks import check, finish, step
from control_api import call

BUILD_TIMEOUT_S = 1200


def built_from_recipe(template):
    status, info = call("GET", f"/templates/{template}")
    return status == 200 and str(info.get("builtFrom") or "").startswith("recipe:")


def main():
    began = time.monotonic()
    status, stand_in = call("GET", "/templates/code-interpreter-v1")
    check("a stand-in serves code-interpreter-v1 while it is built",
          status == 200 and stand_in.get("startCommand")
          and not str(stand_in.get("builtFrom") or "").startswith("recipe:"), repr(stand_in))
    while not built_from_recipe("code-interpreter-v1"):
        if time.monotonic() - began > BUILD_TIMEOUT_S:
            check("the shipped templates are built from their recipes", False, "timed out")
            return finish()
        time.sleep(2)
    print(f"python and code-interpreter-v1 built from their recipes in "
          f"{time.monotonic() - began:.0f} s", flush=True)
    check("python is built from its recipe too", built_from_recipe("python"))
    status, templates = call("GET", "/templates")
    listed = [t["templateID"] for t in templates] if status == 200 else []
    check("the build cache stays hidden",
          not any(t.startswith("build-") for t in listed) and "python" in listed, repr(listed))
    python_template()
    interpreter()
    return finish()


def python_template():
    sandbox = step("create python", lambda: Sandbox.create(template="python", timeout=300))
    if sandbox is None:
        return
    try:
        probe = step("import the data stack", lambda: sandbox.commands.run(
            "python3 -c 'import numpy, pandas, matplotlib, requests; "
            "print(numpy.__version__, pandas.__version__)' && pip --version && node --version"))
        check("python has numpy, pandas, matplotlib, requests, pip and node",
              probe is not None and probe.exit_code == 0 and "pip" in probe.stdout,
              repr(probe))
        whoami = step("whoami", lambda: sandbox.commands.run("whoami"))
        check("commands run as user", whoami is not None and whoami.stdout.strip() == "user",
              repr(whoami))
    finally:
        step("kill python", lambda: sandbox.kill())


def interpreter():
    ci = step("create code interpreter", lambda: CodeInterpreter.create(timeout=300))
    if ci is None:
        return
    try:
        frame = step("pandas", lambda: ci.run_code(
            "import pandas as pd\n"
            "df = pd.DataFrame({'a': [1, 2, 3], 'b': [4, 5, 6]})\n"
            "int(df['a'].sum() + df['b'].sum())"))
        check("pandas computes", frame is not None and frame.text == "21", repr(frame))
        table = step("a data frame's rich result", lambda: ci.run_code("df"))
        check("a data frame comes back with its HTML",
              table is not None and table.results and table.results[0].html
              and "<table" in table.results[0].html, repr(table))
        plotted = step("matplotlib", lambda: ci.run_code(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 2, 3], [1, 4, 9])\n"
            "plt.title('squares')\n"
            "plt.show()"))
        pngs = [r.png for r in (plotted.results if plotted else []) if r.png]
        check("a matplotlib plot gives one PNG result", len(pngs) == 1, repr(plotted))
        if pngs:
            try:
                width, height, rows = png.decode(base64.b64decode(pngs[0]))
                check("the PNG decodes as an image with content",
                      width > 100 and height > 100 and len(set(rows)) > 10,
                      f"{width}x{height}, {len(set(rows))} distinct rows")
            except ValueError as e:
                check("the PNG decodes as an image with content", False, str(e))
        check("plt.show() prints no warning",
              plotted is not None and not plotted.logs.stderr, repr(plotted and plotted.logs))
        again = step("after the figure", lambda: ci.run_code("len(plt.get_fignums())"))
        check("shown figures are closed", again is not None and again.text == "0", repr(again))
    finally:
        step("kill code interpreter", lambda: ci.kill())


if __name__ == "__main__":
    raise SystemExit(main())
