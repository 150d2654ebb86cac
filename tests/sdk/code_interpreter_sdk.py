#!/usr/bin/env python3
"""coppice's code interpreter driven by the unmodified e2b-code-interpreter Python SDK.

`Sandbox.create()` asks for the `code-interpreter-v1` template, as against E2B: coppiced
builds that template at start and waits for its interpreter before answering the create, so
the first `run_code` finds it ready.
"""
import time

from e2b.exceptions import NotFoundException
from e2b_code_interpreter import Sandbox as CodeInterpreter

from checks import check, finish, step


def main():
    began = time.perf_counter()
    ci = CodeInterpreter.create(timeout=300)
    first = step("first run_code", lambda: ci.run_code("1"))
    took = (time.perf_counter() - began) * 1000
    print(f"create until the first run_code answered: {took:.0f} ms", flush=True)
    try:
        check("the first run_code after create answers", first is not None and first.text == "1",
              repr(first))
        run(ci)
    finally:
        step("kill", lambda: ci.kill())
    return finish()


def run(ci):
    step("x = 1", lambda: ci.run_code("x = 1"))
    two = step("x + 1", lambda: ci.run_code("x + 1"))
    check("state persists: x + 1 is 2", two is not None and two.text == "2", repr(two))

    printed = step("print", lambda: ci.run_code("print('hello')"))
    check("print is captured as stdout",
          printed is not None and printed.logs.stdout == ["hello\n"], repr(printed))

    failed = step("1/0", lambda: ci.run_code("1/0"))
    error = failed.error if failed else None
    check("1/0 is a ZeroDivisionError", error is not None and error.name == "ZeroDivisionError",
          repr(error))
    check("with a traceback", error is not None and "ZeroDivisionError" in error.traceback,
          repr(error))

    seen = []
    streamed = step("streamed output", lambda: ci.run_code(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)",
        on_stdout=lambda m: seen.append(("out", m.line)),
        on_stderr=lambda m: seen.append(("err", m.line))))
    check("stdout and stderr reach the callbacks",
          streamed is not None and ("out", "out\n") in seen and ("err", "err\n") in seen, repr(seen))

    context = step("create context", lambda: ci.create_code_context())
    if context is not None:
        fresh = step("x in a new context", lambda: ci.run_code("x", context=context))
        check("a new context has separate state",
              fresh is not None and fresh.error is not None and fresh.error.name == "NameError",
              repr(fresh))
        step("y = 5", lambda: ci.run_code("y = 5", context=context))
        kept = step("y", lambda: ci.run_code("y", context=context))
        check("the context keeps its own state", kept is not None and kept.text == "5", repr(kept))
        listed = step("list contexts", lambda: ci.list_code_contexts()) or []
        check("the context is listed", context.id in [c.id for c in listed], repr(listed))
        step("restart", lambda: ci.restart_code_context(context))
        after = step("y after restart", lambda: ci.run_code("y", context=context))
        check("restart clears the context's state",
              after is not None and after.error is not None and after.error.name == "NameError",
              repr(after))
        step("remove", lambda: ci.remove_code_context(context))
        try:
            ci.run_code("1", context=context)
            check("a removed context is not found", False, "it still ran")
        except NotFoundException:
            check("a removed context is not found", True)

    with_env = step("env var", lambda: ci.run_code(
        "import os; os.environ.get('ONLY_HERE')", envs={"ONLY_HERE": "yes"}))
    check("an execution's env vars are visible to it",
          with_env is not None and with_env.text == "yes", repr(with_env))
    without = step("env var after", lambda: ci.run_code("import os; os.environ.get('ONLY_HERE')"))
    check("and only to it", without is not None and without.text is None, repr(without))

    js = step("javascript", lambda: ci.run_code(
        "const a = 40; console.log('from js'); a + 2", language="javascript"))
    check("a JavaScript execution works",
          js is not None and js.text == "42" and js.logs.stdout == ["from js\n"], repr(js))
    js_error = step("javascript error", lambda: ci.run_code("undefinedName", language="js"))
    check("a JavaScript error is reported",
          js_error is not None and js_error.error is not None
          and js_error.error.name == "ReferenceError", repr(js_error))


if __name__ == "__main__":
    raise SystemExit(main())
