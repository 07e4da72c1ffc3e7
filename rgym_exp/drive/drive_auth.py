"""Credentials, the Drive v3 client, and what its errors mean, for DriveApiStore.

Where credentials come from, first that is set wins:

1. ``GDRIVE_CREDENTIALS`` (the ``credentials`` argument): a JSON file, either a
   service-account key (``"type": "service_account"``) or an OAuth token of a
   person (``"type": "authorized_user"``, or the ``to_json()`` of
   google-auth's ``Credentials``: ``refresh_token`` + ``client_id``);
2. the file named by ``GOOGLE_APPLICATION_CREDENTIALS`` (same two kinds);
3. in Colab: ``google.colab.auth.authenticate_user()`` then ``google.auth.default()``.

With an ``endpoint`` (tests, proxies) no credentials are used: requests go
unauthenticated to that base URL. The client is always built from the Drive v3
discovery document bundled with google-api-python-client, so building it needs
no network.

Errors: 429, 5xx, 408, 403 rateLimitExceeded/userRateLimitExceeded and network
failures are TransientDriveError (worth retrying); anything else is DriveError, with
the HTTP status and Drive's reason in its message and attributes.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
from datetime import datetime
from urllib.parse import urlsplit

import httplib2

from rgym_exp.drive.store import StoreError, TooLarge, TransientStoreError

SCOPES = ["https://www.googleapis.com/auth/drive"]
TIMEOUT_S = 60                   # one request; RetryingStore bounds an operation
NODE_HEADER = "x-rl-swarm-node"  # sent only to a custom endpoint: lets a fake server count per node
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}

_HOW = ("set GDRIVE_CREDENTIALS to a service-account key or an OAuth token JSON file (or "
        "GOOGLE_APPLICATION_CREDENTIALS), or run in Colab; see docs/DRIVE_API.md")


def credentials_from_file(path: str, source: str):
    """(credentials, who) from a service-account key or an OAuth token file."""
    from google.oauth2 import credentials as user_creds, service_account
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise StoreError(f"{source}={path}: no such file; {_HOW}")
    try:
        with open(full, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{source}={path} is not a readable JSON file ({exc}); {_HOW}") from None
    if not isinstance(doc, dict):
        raise StoreError(f"{source}={path} is not a credentials JSON object; {_HOW}")
    kind = doc.get("type")
    try:
        if kind == "service_account":
            creds = service_account.Credentials.from_service_account_info(doc, scopes=SCOPES)
            return creds, f"service account {doc.get('client_email', '?')}"
        if kind == "authorized_user" or (kind is None and "refresh_token" in doc
                                         and "client_id" in doc):
            creds = user_creds.Credentials.from_authorized_user_info(doc, scopes=SCOPES)
            return creds, f"OAuth user token {os.path.basename(full)}"
    except (ValueError, KeyError) as exc:
        raise StoreError(f"{source}={path} is a {kind or 'token'} file with missing or bad "
                         f"fields ({exc})") from None
    if kind is None and ("installed" in doc or "web" in doc):
        raise StoreError(f"{source}={path} is an OAuth *client secret*, not a token: run the "
                         "OAuth flow once to make a token file (docs/DRIVE_API.md) and point "
                         f"{source} at that")
    raise StoreError(f"{source}={path} has \"type\": {kind!r}; expected \"service_account\" (a "
                     "key from Google Cloud IAM) or \"authorized_user\" (an OAuth token file)")


def load_credentials(credentials: str = ""):
    """(credentials, who) by the order in the module docstring; StoreError if none works."""
    if credentials:
        return credentials_from_file(credentials, "GDRIVE_CREDENTIALS")
    env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if env:
        return credentials_from_file(env, "GOOGLE_APPLICATION_CREDENTIALS")
    try:
        from google.colab import auth as colab_auth  # type: ignore[import-not-found]
    except ImportError:
        raise StoreError(f"no Drive credentials for a gdrive:// GDRIVE_PATH: {_HOW}") from None
    try:
        import google.auth
        colab_auth.authenticate_user()
        creds, _ = google.auth.default(scopes=SCOPES)
        return creds, "Colab user"
    except Exception as exc:  # noqa: BLE001 - any failure here means: no usable login
        raise StoreError(f"Colab sign-in for the Drive API failed ({exc}); {_HOW}") from None


def _http(proxy_info=httplib2.proxy_info_from_environment) -> httplib2.Http:
    """An httplib2.Http that leaves 308 alone: Drive's resumable uploads answer "308 Resume
    Incomplete", which httplib2 would otherwise follow as a redirect (as build_http does)."""
    http = httplib2.Http(timeout=TIMEOUT_S, proxy_info=proxy_info)
    http.redirect_codes = http.redirect_codes - {308}
    return http


class _Tagged:
    """An httplib2.Http that adds one header to every request."""

    def __init__(self, http, name: str, value: str):
        self._http, self._name, self._value = http, name, value

    def request(self, uri, method="GET", body=None, headers=None, *args, **kwargs):
        headers = dict(headers or {})
        headers[self._name] = self._value
        return self._http.request(uri, method, body, headers, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._http, name)


def connect(credentials: str = "", endpoint: str = ""):
    """(service, http_for_this_thread, who): a Drive v3 client and a per-thread transport
    (httplib2.Http is not thread-safe; the heartbeat and log threads share the store)."""
    from googleapiclient import discovery, discovery_cache
    local = threading.local()
    if endpoint:
        base = endpoint if endpoint.endswith("/") else endpoint + "/"
        node = os.environ.get("NODE_ID", "")
        local_host = urlsplit(base).hostname in ("127.0.0.1", "localhost", "::1")

        def new_http():
            http = _http(proxy_info=None) if local_host else _http()
            return _Tagged(http, NODE_HEADER, node) if node else http
        # client_options.api_endpoint would keep the upload URLs' https scheme and drop the
        # service path, so point the bundled document's rootUrl at the endpoint instead.
        doc = json.loads(discovery_cache.get_static_doc("drive", "v3"))
        doc["rootUrl"], doc["baseUrl"] = base, base + doc["servicePath"]
        service = discovery.build_from_document(doc, http=new_http())
        who = f"endpoint {base}"
    else:
        import google_auth_httplib2
        creds, who = load_credentials(credentials)

        def new_http():
            return google_auth_httplib2.AuthorizedHttp(creds, http=_http())
        service = discovery.build("drive", "v3", http=new_http(), static_discovery=True,
                                  cache_discovery=False)

    def http_for_thread():
        if getattr(local, "http", None) is None:
            local.http = new_http()
        return local.http
    return service, http_for_thread, who


# --- errors --------------------------------------------------------------------------------

class DriveError(StoreError):
    """A Drive API request failed for good; ``status``/``reason`` say how."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status, self.reason = status, reason


class TransientDriveError(TransientStoreError):
    """Rate limit, server error or network failure, still failing after our retries."""


def details(exc) -> tuple[int, str, str]:
    """(status, first error reason, message) of a googleapiclient HttpError."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = "", getattr(exc, "reason", "") or ""
    try:
        error = json.loads(exc.content.decode("utf-8"))["error"]
        message = error.get("message", message)
        reason = (error.get("errors") or [{}])[0].get("reason", "") or ""
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        pass
    return status, reason, message


def classify(exc: Exception, what: str, method: str, who: str) -> StoreError:
    """The StoreError an exception from the client stands for (re-raises programming errors)."""
    import google.auth.exceptions as auth_exc
    from googleapiclient.errors import HttpError
    if isinstance(exc, HttpError):
        status, reason, message = details(exc)
        text = f"{method} {what}: HTTP {status}{' ' + reason if reason else ''}: {message}"
        if status in (408, 429) or status >= 500 or (status == 403 and reason in RATE_REASONS):
            return TransientDriveError(text)
        if status == 401:
            text = f"Drive rejected the credentials ({who}): {text}"
        elif reason == "storageQuotaExceeded":
            text += (" -- a service account has no storage of its own: use a folder on a shared "
                     "drive, or an OAuth token (docs/DRIVE_API.md)")
        return DriveError(text, status, reason)
    if isinstance(exc, auth_exc.RefreshError):
        if getattr(exc, "retryable", False):
            return TransientDriveError(f"{method} {what}: token refresh failed: {exc}")
        return DriveError(f"the Drive credentials do not work ({who}): {exc}; check "
                          "GDRIVE_CREDENTIALS / GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(exc, (httplib2.HttpLib2Error, OSError, auth_exc.TransportError)):
        return TransientDriveError(f"{method} {what}: network error: {exc!r}")
    if isinstance(exc, StoreError):
        return exc
    raise exc


def about(action: str):
    """Decorator: errors of a Store method name the path it was asked about, not only the
    folder being looked up at the time."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args):
            path = args[1] if action == "upload" else args[0]
            try:
                return method(self, *args)
            except StoreError as exc:
                if isinstance(exc, TooLarge) or f" {path}:" in f" {exc}":
                    raise
                renamed = copy.copy(exc)  # same class and status
                renamed.args = (f"cannot {action} {path}: {exc}",)
                raise renamed from None
        return run
    return wrap


# --- small helpers ---------------------------------------------------------------------------

def quote(value: str) -> str:
    """A string literal for a Drive ``q`` filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def epoch(stamp: str) -> float:
    """Seconds since 1970 from Drive's RFC 3339 time, 0.0 if there is none."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return 0.0


class Step:
    """One step of a resumable upload in the shape of a request: ``execute()`` sends the
    next chunk (after opening the session, or asking where it stands after a failure,
    each counted as one more ``upload.chunk``) and returns the file resource once the
    upload is complete, else None."""

    def __init__(self, request, http, count):
        self.request, self.http, self.count = request, http, count

    def execute(self, http=None):
        if self.request.resumable_uri is None or self.request._in_error_state:
            self.count("upload.chunk")
        return self.request.next_chunk(http=self.http)[1]
