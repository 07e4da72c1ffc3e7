"""A stand-in for the Hugging Face Hub's HTTP API, for tests: no network.

It serves, on 127.0.0.1 at a free port, the few endpoints a node's Hub push uses
(rgym_exp/hub.py through huggingface_hub): ``whoami-v2``, ``auth-check/write``, repository
creation, ``validate-yaml`` (a model card's metadata header must parse), ``preupload``
(every file is a regular, inline upload: no LFS, no Xet) and ``commit`` (the NDJSON body,
its files decoded and kept). Point huggingface_hub at it with
``HF_ENDPOINT=hub.url`` (another process) or ``HfApi(endpoint=hub.url)``.

Tokens: ``hf_write`` may write to ``user/*``; ``hf_read`` is valid but read-only (403 on
any write); anything else is invalid (401). ``hub.commits`` lists what was committed, in
order; ``hub.requests`` every request line; ``hub.fail_commits = [400]`` answers the next
commit with that status (huggingface_hub itself retries a 5xx, with back-off).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = "user"
TOKENS = {"hf_write": "write", "hf_read": "read"}


class HubStandIn:
    def __init__(self):
        self.repos: dict[str, dict] = {}          # repo id -> {path: bytes} at the head
        self.commits: list[dict] = []             # {"repo", "message", "files": {path: bytes}}
        self.requests: list[str] = []
        self.card_metadata: list[dict] = []       # model card headers validated, parsed
        self.fail_commits: list[int] = []         # statuses for the next commits to fail with
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):   # quiet; hub.requests keeps the lines
                pass

            def reply(self, code: int, body=None, headers: dict | None = None):
                data = json.dumps(body if body is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def error(self, code: int, message: str, error_code: str = ""):
                headers = {"X-Error-Message": message}
                if error_code:          # what the Hub sends and huggingface_hub maps to errors
                    headers["X-Error-Code"] = error_code
                self.reply(code, {"error": message}, headers)

            def body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def token(self):
                auth = self.headers.get("Authorization", "")
                return TOKENS.get(auth[7:]) if auth.startswith("Bearer ") else None

            def route(self, method: str):
                path = self.path.split("?", 1)[0]
                body = self.body()
                with hub._lock:
                    hub.requests.append(f"{method} {path}")
                if method == "POST" and path == "/api/validate-yaml":  # a model card's header
                    return self.validate_yaml(body)
                access = self.token()
                if access is None:
                    return self.error(401, "Invalid credentials in Authorization header")
                if method == "GET" and path == "/api/whoami-v2":
                    return self.reply(200, {"type": "user", "name": USER, "auth": {
                        "accessToken": {"displayName": "test", "role": access}}})
                if method == "POST" and path == "/api/repos/create":
                    repo = json.loads(body or b"{}")
                    repo_id = f"{repo.get('organization') or USER}/{repo['name']}"
                    if access != "write" or not repo_id.startswith(USER + "/"):
                        return self.error(403, "You don't have the rights to create this model")
                    with hub._lock:
                        if repo_id in hub.repos:
                            return self.error(409, "You already created this model repo")
                        hub.repos[repo_id] = {}
                    return self.reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                parts = path.split("/")     # '', api, models, user, name, action, ...
                if len(parts) < 6 or parts[:3] != ["", "api", "models"]:
                    return self.error(404, f"no such endpoint: {method} {path}")
                repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
                if repo_id not in hub.repos:
                    return self.error(404, "Repository not found", "RepoNotFound")
                writable = access == "write" and repo_id.startswith(USER + "/")
                if action == "auth-check":
                    return self.reply(200) if writable or parts[6:] != ["write"] else \
                        self.error(403, "You don't have write access to this repo")
                if not writable:
                    return self.error(403, "You don't have write access to this repo")
                if method == "POST" and action == "preupload":
                    files = json.loads(body)["files"]
                    return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if method == "POST" and action == "commit":
                    return self.commit(repo_id, body)
                return self.error(404, f"no such endpoint: {method} {path}")

            def validate_yaml(self, body: bytes):
                import yaml
                content = json.loads(body)["content"]
                try:
                    if not content.startswith("---\n") or "\n---\n" not in content[3:]:
                        raise ValueError("no metadata header (--- ... ---) at the top")
                    meta = yaml.safe_load(content[4:content.index("\n---\n", 3)])
                    if not isinstance(meta, dict):
                        raise ValueError("the metadata is not a mapping")
                except (ValueError, yaml.YAMLError) as exc:
                    return self.reply(400, {"errors": [{"message": str(exc)}]})
                with hub._lock:
                    hub.card_metadata.append(meta)
                return self.reply(200, {"errors": [], "warnings": []})

            def commit(self, repo_id: str, body: bytes):
                with hub._lock:
                    if hub.fail_commits:
                        return self.error(hub.fail_commits.pop(0), "stand-in: commit refused")
                message, files = "", {}
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        message = item["value"].get("summary", "")
                    elif item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    else:
                        return self.error(400, f"the stand-in takes inline files only: {item['key']}")
                with hub._lock:
                    hub.repos[repo_id].update(files)
                    hub.commits.append({"repo": repo_id, "message": message, "files": files})
                    n = len(hub.commits)
                oid = hashlib.sha1(f"{repo_id}/{n}".encode()).hexdigest()
                return self.reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}",
                                        "commitOid": oid, "success": True})

            def do_GET(self):
                self.route("GET")

            def do_POST(self):
                self.route("POST")

        return Handler
