"""Calls to the gateway's control plane outside the SDKs (coppice's own endpoints), shared by
the SDK suites. Reads E2B_API_URL and E2B_API_KEY."""
import json
import os
import urllib.error
import urllib.request


def call(method, path, body=None, timeout=60):
    """(status, parsed JSON or raw bytes) of one control-plane call."""
    api = os.environ["E2B_API_URL"].rstrip("/")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api + path, data=data, method=method,
                                     headers={"X-API-KEY": os.environ["E2B_API_KEY"],
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    if raw[:1] in (b"{", b"["):
        return status, json.loads(raw)
    return status, raw
