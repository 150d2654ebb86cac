"""coppice's code interpreter: the server on port 49999 that the e2b-code-interpreter SDKs drive.

`POST /execute` streams NDJSON; `/contexts` manages stateful interpreters, each a persistent
worker process (Python or JavaScript) that keeps its variables between executions.
"""
