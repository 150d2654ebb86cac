"""A process whose only state is in memory, shared by the SDK suites that check that pauses
and restarts keep it: the count lives in a shell variable; the file just shows it."""

from checks import step

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"


def count(sbx):
    text = step("read counter", lambda: sbx.files.read("/tmp/counter")) or ""
    return int(text.strip() or "0")


def alive(sbx, pid):
    r = step("ps", lambda: sbx.commands.run(f"kill -0 {pid} && echo yes || echo no"))
    return r is not None and r.stdout == "yes\n"
