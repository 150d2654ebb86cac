"""PASS/FAIL bookkeeping shared by the SDK suites."""

FAILS = []


def check(name, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + name + ("" if cond else f"  -- {detail}"), flush=True)
    if not cond:
        FAILS.append(name)


def step(name, fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        check(name, False, f"{type(e).__name__}: {e}")
        return None


def finish():
    print(f"\n{len(FAILS)} failed: {FAILS}" if FAILS else "\nALL PASSED", flush=True)
    return 1 if FAILS else 0
