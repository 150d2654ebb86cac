"""One Python context's interpreter: runs cells in one namespace, so state persists.

Requests arrive as JSON lines on the descriptor named by argv[1]; results, errors and the end
of each execution leave as JSON lines on the descriptor named by argv[2]. The cell's own
output goes to descriptors 1 and 2 (the server reads them), each closed by the execution's
marker so the server knows it has all of it.
"""
import ast
import base64
import builtins
import io
import json
import os
import signal
import sys
import traceback
import warnings

RICH_REPRS = (
    ("html", "_repr_html_"),
    ("markdown", "_repr_markdown_"),
    ("svg", "_repr_svg_"),
    ("png", "_repr_png_"),
    ("jpeg", "_repr_jpeg_"),
    ("latex", "_repr_latex_"),
    ("json", "_repr_json_"),
    ("javascript", "_repr_javascript_"),
    ("pdf", "_repr_pdf_"),
)


def plain_text(value):
    text = repr(value)
    # As Jupyter's text/plain reaches the SDK: a string without its quotes.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text


def formatted(value, main):
    result = {"type": "result", "is_main_result": main, "text": plain_text(value)}
    for field, method in RICH_REPRS:
        render = getattr(value, method, None)
        if not callable(render):
            continue
        try:
            rendered = render()
        except Exception:  # a broken repr must not fail the cell
            continue
        if isinstance(rendered, tuple):
            rendered = rendered[0]
        if rendered is None:
            continue
        if isinstance(rendered, bytes):
            rendered = base64.b64encode(rendered).decode()
        result[field] = rendered
    return result


def figures():
    """Open matplotlib figures as PNG results, then closed (as an inline backend shows them)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    shown = []
    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        shown.append({
            "type": "result",
            "is_main_result": False,
            "text": repr(figure),
            "png": base64.b64encode(buffer.getvalue()).decode(),
        })
    pyplot.close("all")
    return shown


def error_of(exc):
    # Only the cell's own frames: the worker's are noise to the user.
    frames = traceback.extract_tb(exc.__traceback__)
    own = [frame for frame in frames if frame.filename.startswith("<cell")]
    lines = ["Traceback (most recent call last):\n"] if own else []
    lines += traceback.format_list(own)
    lines += traceback.format_exception_only(type(exc), exc)
    return {
        "type": "error",
        "name": type(exc).__name__,
        "value": str(exc),
        "traceback": "".join(lines),
    }


class Worker:
    def __init__(self, replies):
        self.replies = replies
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.count = 0

    def send(self, message):
        self.replies.write(json.dumps(message) + "\n")
        self.replies.flush()

    def execute(self, code, env_vars, marker):
        self.count += 1
        self.send({"type": "number_of_executions", "execution_count": self.count})
        saved = {name: os.environ.get(name) for name in env_vars}
        os.environ.update(env_vars)
        # An interrupt stops a running cell; between cells it must not end the worker.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.run_cell(code)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os.write(1, marker.encode())
            os.write(2, marker.encode())
            self.send({"type": "done"})

    def run_cell(self, code):
        name = f"<cell-{self.count}>"
        try:
            tree = ast.parse(code, name, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, name, "exec"), self.namespace)
            value = eval(compile(last, name, "eval"), self.namespace) if last else None
        except BaseException as exc:  # SystemExit and KeyboardInterrupt end the cell only
            for figure in figures():
                self.send(figure)
            self.send(error_of(exc))
            return
        for figure in figures():
            self.send(figure)
        if value is not None:
            self.namespace["_"] = value
            self.send(formatted(value, True))


def main():
    requests_fd, replies_fd = int(sys.argv[1]), int(sys.argv[2])
    # Not for the cell's children: one left running would keep the server from seeing this
    # worker end.
    os.set_inheritable(requests_fd, False)
    os.set_inheritable(replies_fd, False)
    requests = os.fdopen(requests_fd, "r", encoding="utf-8")
    replies = os.fdopen(replies_fd, "w", encoding="utf-8")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # `plt.show()` under Agg warns that nothing can be shown; here every open figure is
    # sent as a result when the cell ends, which is what showing it means.
    warnings.filterwarnings("ignore", message=".*(non-interactive|non-GUI backend)",
                            category=UserWarning)
    # A line at a time, so that `print` reaches the client whole and as it happens.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(replies)
    for line in requests:
        request = json.loads(line)
        if request["kind"] == "setenv":
            os.environ.update(request["env"])
        elif request["kind"] == "execute":
            worker.execute(request["code"], request.get("env_vars") or {}, request["marker"])


if __name__ == "__main__":
    main()
