"""The code interpreter server over loopback, without a sandbox: the protocol's edges that the
SDK suites do not reach (run with `python3 -m unittest discover` in this directory)."""
import http.client
import json
import os
import shutil
import socket
import threading
import time
import unittest

os.environ["COPPICE_INTERPRETER_KEEPALIVE"] = "0.3"

from coppice_interpreter.contexts import Contexts  # noqa: E402
from coppice_interpreter.server import Server  # noqa: E402


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.contexts = Contexts("/tmp")
        cls.server = Server(("127.0.0.1", 0), cls.contexts)
        cls.port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.contexts.stop_all()

    def request(self, method, path, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        payload = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        connection.request(method, path, payload, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        data = answer.read().decode()
        connection.close()
        return answer.status, data

    def execute(self, body):
        status, data = self.request("POST", "/execute", body)
        self.assertEqual(status, 200, data)
        lines = data.split("\n")
        self.assertEqual(lines[-1], "", "the stream ends with a newline")
        self.assertNotIn("", lines[:-1], "no blank line in the stream")
        messages = [json.loads(line) for line in lines[:-1]]
        self.assertEqual(messages[-1], {"type": "end_of_execution"})
        # A keepalive may come at any point (a worker slow to start); nothing else comes
        # before the execution's number.
        content = [m for m in messages if m["type"] != "keepalive"]
        self.assertEqual(content[0]["type"], "number_of_executions")
        return messages

    def of_type(self, messages, kind):
        return [m for m in messages if m["type"] == kind]

    def test_health_answers_ok(self):
        self.assertEqual(self.request("GET", "/health"), (200, '"OK"'))

    def test_bad_requests_are_refused_with_text(self):
        self.assertEqual(self.request("POST", "/execute", {"code": "1", "context_id": "a",
                                                         "language": "python"}),
                         (400, "Only one of context_id or language can be provided"))
        self.assertEqual(self.request("POST", "/execute", {"code": "1", "context_id": "nope"}),
                         (404, "Context nope not found"))
        self.assertEqual(self.request("POST", "/execute", b"{not json")[0], 400)
        self.assertEqual(self.request("POST", "/execute", {"code": 5})[0], 400)
        self.assertEqual(self.request("POST", "/execute", {"code": "1", "language": "cobol"})[0],
                         400)
        self.assertEqual(self.request("POST", "/contexts", {"cwd": "/no/such/dir"})[0], 400)
        self.assertEqual(self.request("POST", "/contexts/nope/restart"),
                         (404, "Context nope not found"))
        self.assertEqual(self.request("DELETE", "/contexts/nope"), (404, "Context nope not found"))

    def test_results_carry_rich_representations_and_strings_lose_their_quotes(self):
        code = ("class Page:\n"
                "    def _repr_html_(self): return '<b>hi</b>'\n"
                "    def __repr__(self): return 'Page()'\n"
                "Page()")
        result = self.of_type(self.execute({"code": code}), "result")
        self.assertEqual(result, [{"type": "result", "is_main_result": True, "text": "Page()",
                                   "html": "<b>hi</b>"}])
        text = self.of_type(self.execute({"code": "'quoted'"}), "result")
        self.assertEqual(text[0]["text"], "quoted")
        self.assertEqual(self.of_type(self.execute({"code": "None"}), "result"), [])

    def test_open_figures_are_returned_as_png_results_and_closed(self):
        # A stand-in for matplotlib.pyplot (not installed here) with the calls the worker makes.
        code = ("import sys, types\n"
                "pyplot = types.ModuleType('matplotlib.pyplot')\n"
                "class Figure:\n"
                "    def savefig(self, buffer, format, bbox_inches): buffer.write(b'PNG:' + format.encode())\n"
                "    def __repr__(self): return '<Figure size 640x480>'\n"
                "open_figures = {1: Figure(), 2: Figure()}\n"
                "pyplot.get_fignums = lambda: sorted(open_figures)\n"
                "pyplot.figure = lambda number: open_figures[number]\n"
                "pyplot.close = lambda which: open_figures.clear()\n"
                "sys.modules['matplotlib.pyplot'] = pyplot\n"
                "'main'")
        results = self.of_type(self.execute({"code": code}), "result")
        figure = {"type": "result", "is_main_result": False, "text": "<Figure size 640x480>",
                  "png": "UE5HOnBuZw=="}
        self.assertEqual(results, [figure, figure,
                                   {"type": "result", "is_main_result": True, "text": "main"}])
        self.assertEqual(self.of_type(self.execute({"code": "None"}), "result"), [])

    def test_output_of_a_child_process_and_of_a_line_without_newline_is_kept(self):
        messages = self.execute({"code": "import os, sys\nos.system('echo child')\n"
                                          "sys.stdout.write('tail')"})
        text = "".join(m["text"] for m in self.of_type(messages, "stdout"))
        self.assertEqual(text, "child\ntail")
        self.assertTrue(all("timestamp" in m for m in self.of_type(messages, "stdout")))

    def test_a_quiet_execution_gets_keepalives(self):
        messages = self.execute({"code": "import time; time.sleep(1)"})
        self.assertGreaterEqual(len(self.of_type(messages, "keepalive")), 2)

    def test_an_interpreter_that_dies_is_reported_and_replaced(self):
        context = json.loads(self.request("POST", "/contexts", {})[1])
        self.execute({"code": "kept = 1", "context_id": context["id"]})
        died = self.execute({"code": "import os; os._exit(3)", "context_id": context["id"]})
        self.assertEqual(self.of_type(died, "error")[0]["name"], "UnexpectedEndOfExecution")
        after = self.execute({"code": "kept", "context_id": context["id"]})
        self.assertEqual(self.of_type(after, "error")[0]["name"], "NameError")
        self.assertEqual(self.request("DELETE", f"/contexts/{context['id']}"), (200, "null"))

    def abandon(self, context_id, code):
        """Starts `code` in the context, then goes away mid-execution."""
        sock = socket.create_connection(("127.0.0.1", self.port))
        body = json.dumps({"code": code, "context_id": context_id}).encode()
        sock.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        sock.recv(4096)
        sock.close()

    def check_interrupted_keeping_state(self, language, set_code, busy_code, read_code):
        context = json.loads(self.request("POST", "/contexts", {"language": language})[1])
        self.execute({"code": set_code, "context_id": context["id"]})
        self.abandon(context["id"], busy_code)
        # Until the server writes to the closed socket it cannot know; a keepalive does.
        started = time.time()
        after = self.execute({"code": read_code, "context_id": context["id"]})
        self.assertEqual(self.of_type(after, "error"), [])
        self.assertEqual(self.of_type(after, "result")[0]["text"], "kept")
        self.assertLess(time.time() - started, 10)

    def test_a_client_that_goes_away_interrupts_its_cell_and_the_state_stays(self):
        self.check_interrupted_keeping_state(
            "python", "state = 'kept'", "import time\nwhile True: time.sleep(0.01)", "state")

    @unittest.skipUnless(shutil.which("node"), "javascript contexts need node")
    def test_an_abandoned_javascript_cell_is_interrupted_and_the_state_stays(self):
        self.check_interrupted_keeping_state(
            "javascript", "var state = 'kept'", "while (true) {}", "state")

    def test_an_interrupt_between_cells_does_not_end_the_interpreter(self):
        context = json.loads(self.request("POST", "/contexts", {})[1])
        self.execute({"code": "state = 'kept'", "context_id": context["id"]})
        self.contexts.get(context["id"]).worker.interrupt()
        after = self.execute({"code": "state", "context_id": context["id"]})
        self.assertEqual(self.of_type(after, "result")[0]["text"], "kept")

    def test_a_cell_that_closes_its_stdout_does_not_hang_the_next(self):
        context = json.loads(self.request("POST", "/contexts", {})[1])
        self.execute({"code": "import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 1)",
                      "context_id": context["id"]})
        after = self.execute({"code": "'next'", "context_id": context["id"]})
        self.assertEqual(self.of_type(after, "result")[0]["text"], "next")

    def test_what_a_dying_interpreter_printed_is_kept(self):
        died = self.execute({"code": "import os, sys\nsys.stderr.write('last words\\n')\n"
                                     "sys.stderr.flush()\nos._exit(1)", "language": "python"})
        text = "".join(m["text"] for m in self.of_type(died, "stderr"))
        self.assertIn("last words", text)
        self.assertEqual(self.of_type(died, "error")[0]["name"], "UnexpectedEndOfExecution")

    def test_the_default_alias_is_the_default_python_context(self):
        self.execute({"code": "aliased = 7"})
        messages = self.execute({"code": "aliased", "context_id": "default"})
        self.assertEqual(self.of_type(messages, "result")[0]["text"], "7")

    @unittest.skipUnless(shutil.which("node"), "javascript contexts need node")
    def test_javascript_awaits_a_promise_and_keeps_its_state(self):
        self.execute({"code": "let kept = 20", "language": "js"})
        messages = self.execute({"code": "Promise.resolve(kept + 1)", "language": "javascript"})
        self.assertEqual(self.of_type(messages, "result")[0]["text"], "21")


if __name__ == "__main__":
    unittest.main()
