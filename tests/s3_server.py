"""An S3-compatible server for tests: moto in server mode, one process per test session.

No network: moto listens on 127.0.0.1 at a free port. It accepts any credentials and
implements what FsspecStore uses (PUT with ``If-None-Match: *``, ranged GET, listing,
copy, multi-delete). ``s3_env`` is the standard AWS environment that points s3fs (in
this process or in a launcher process) at it, and at nothing on this machine's disk.
"""

from __future__ import annotations

import atexit
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid

_server: dict = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_endpoint() -> str:
    """The server's URL, starting it on first use (stopped when the session ends)."""
    if _server.get("proc") is not None and _server["proc"].poll() is None:
        return _server["url"]
    port = _free_port()
    log_path = os.path.join(tempfile.mkdtemp(prefix="moto-"), "requests.log")
    with open(log_path, "wb") as log:  # werkzeug's access log: one line per request
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT)
    atexit.register(lambda: (proc.terminate(), proc.wait(timeout=10)))
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start within 60s")
    _server.update(proc=proc, url=f"http://127.0.0.1:{port}", log=log_path)
    return _server["url"]


def request_log() -> str:
    """The server's access log (``"GET /bucket/key?query HTTP/1.1" 200`` lines)."""
    return _server["log"]


def count_requests(lines: list[str], prefix: str) -> dict:
    """Requests under ``/prefix/`` by kind (LIST, GET, HEAD, PUT, COPY, DELETE) and by
    the experiment's top-level area (rollouts, peers, state...)."""
    by_kind, by_area = {}, {}
    for line in lines:
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # werkzeug colours 4xx lines
        m = re.search(r'"(GET|PUT|HEAD|POST|DELETE) /([^ ?]*)(\?[^ ]*)? HTTP', line)
        if not m:
            continue
        method, path, query = m.group(1), m.group(2), m.group(3) or ""
        if "list-type" in query or (method == "GET" and "prefix=" in query):
            kind, key = "LIST", re.search(r"prefix=([^&]*)", query).group(1).replace("%2F", "/")
            key = f"{path}/{key}"
        else:
            kind, key = ("DELETE" if "delete" in query else method), path
        if not key.startswith(prefix + "/"):
            continue
        parts = key[len(prefix) + 1:].split("/")
        area = parts[2].replace(".json", "") if len(parts) > 2 else "experiments"
        by_kind[kind] = by_kind.get(kind, 0) + 1
        by_area[area] = by_area.get(area, 0) + 1
    return {"kind": by_kind, "area": by_area}


def s3_env(endpoint: str) -> dict:
    """Standard AWS variables for the test server (no profile or config file read)."""
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true"}


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the server; its name."""
    import s3fs
    name = f"swarm-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint,
                      skip_instance_cache=True).mkdir(name)
    return name
