"""A node's Ed25519 key pair (``cryptography``): made at its first start in KEY_DIR, beside
its node id and never on the shared folder, and the short names people and file names
use for a public key. What is signed with it, and how readers check it: rgym_exp/trust.py.

Losing the key file means the node cannot continue under its NODE_ID in the experiments
it joined (README, "Keys"): back KEY_DIR up.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_id(key: str) -> str:
    """A public key (base64) as a file name holds it: 16 hex digits of its SHA-256."""
    return hashlib.sha256(base64.b64decode(key)).hexdigest()[:16]


def fingerprint(key: str) -> str:
    """A key as people compare it in log lines: its first 8 base64 characters."""
    return key[:8]


class Keys:
    """One node's Ed25519 key pair."""

    def __init__(self, private: Ed25519PrivateKey, path: str = ""):
        self.private, self.path = private, path
        self.public = _b64(private.public_key().public_bytes(serialization.Encoding.Raw,
                                                             serialization.PublicFormat.Raw))

    @classmethod
    def generate(cls) -> "Keys":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str) -> "Keys":
        """The key in ``path`` (PEM, PKCS#8), made there (mode 0600) if there is none.
        ValueError names the file when it holds no usable key."""
        try:
            with open(path, "rb") as fh:
                data = fh.read(64 * 1024)
        except FileNotFoundError:
            return cls._create(path)
        except OSError as exc:
            raise ValueError(f"cannot read the node key {path}: {exc.strerror}") from None
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            private = None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key (PEM): restore it from your "
                             "backup, or move it away to make a new key -- a new key cannot "
                             "continue this NODE_ID in the experiments where it registered")
        return cls(private, path)

    @classmethod
    def _create(cls, path: str) -> "Keys":
        keys = cls(Ed25519PrivateKey.generate(), path)
        pem = keys.private.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        folder = os.path.dirname(path) or "."
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)          # fails if another process made one meanwhile
        except FileExistsError:
            return cls.load_or_create(path)
        except OSError as exc:
            raise ValueError(f"cannot write the node key {path}: {exc.strerror}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.info("made this node's key pair in %s (key %s); back it up: without it this "
                 "NODE_ID cannot continue in the experiments it joins", path,
                 fingerprint(keys.public))
        return keys

    def sign(self, message: bytes) -> str:
        return _b64(self.private.sign(message))
