"""
Bearer tokens: who may use the API, with which role, over which devices.

A token is 32 random bytes (URL-safe text with a C{chm_} prefix).  Only its
SHA-256 is stored, in a JSON file in the state directory; a presented token
is hashed and compared with every stored hash by C{hmac.compare_digest}, so
neither the file nor the timing of a check gives a token away.

Roles are ordered: C{read} (GETs) < C{operate} (RPCs, RESTCONF, closing
sessions, approving and denying) < C{admin} (changing devices, tokens).
A token may also be limited to devices carrying given labels; devices it
cannot see are, for it, devices that do not exist.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

READ = "read"
OPERATE = "operate"
ADMIN = "admin"
ROLES = (READ, OPERATE, ADMIN)
TOKEN_PREFIX = "chm_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's id, role and label limits (never the token)."""

    token_id: str
    role: str
    #: The device must carry all of these labels; empty: every device.
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def limited(self) -> bool:
        return bool(self.labels)

    def sees_labels(self, labels: Optional[Mapping[str, str]]) -> bool:
        labels = labels or {}
        return all(labels.get(key) == value for key, value in self.labels.items())

    def fields(self) -> Dict[str, Any]:
        return {"id": self.token_id, "name": self.name, "role": self.role, "labels": dict(self.labels)}


@dataclass(frozen=True)
class StoredToken:
    id: str
    sha256: str
    role: str
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    created: float = 0.0

    def principal(self) -> Principal:
        return Principal(self.id, self.role, dict(self.labels), self.name)

    def record(self) -> Dict[str, Any]:
        return {
            "id": self.id, "sha256": self.sha256, "role": self.role,
            "labels": dict(self.labels), "name": self.name, "created": self.created,
        }


class TokenFileError(Exception):
    """The tokens file cannot be read or is malformed; the message says which."""


def check_role(role: Any) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def check_labels(labels: Any) -> Dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("labels must be an object of string values")
    return dict(labels)


class TokenStore:
    """
    The tokens file: load, check, add, remove.  Written atomically (a
    temporary file renamed over the old one), mode 0600.
    """

    def __init__(self, path: str, clock=None):
        self.path = path
        self._clock = clock
        self._tokens: Dict[str, StoredToken] = {}

    def _now(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.time()

    # -- file ----------------------------------------------------------------

    def load(self) -> "TokenStore":
        if not os.path.exists(self.path):
            self._tokens = {}
            return self
        try:
            with open(self.path, encoding="utf-8") as handle:
                document = json.load(handle)
            tokens = {}
            for entry in document.get("tokens", []):
                token = StoredToken(
                    id=str(entry["id"]), sha256=str(entry["sha256"]), role=check_role(entry["role"]),
                    labels=check_labels(entry.get("labels")), name=str(entry.get("name", "")),
                    created=float(entry.get("created", 0.0)),
                )
                tokens[token.id] = token
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise TokenFileError(f"{self.path}: {error}") from None
        self._tokens = tokens
        return self

    def save(self) -> None:
        document = {"tokens": [token.record() for token in self._tokens.values()]}
        write_private_file(self.path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    # -- tokens --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tokens)

    def tokens(self) -> List[StoredToken]:
        return sorted(self._tokens.values(), key=lambda token: token.created)

    def add(self, role: str, labels: Optional[Mapping[str, str]] = None, name: str = "") -> Tuple[str, StoredToken]:
        """A new token: returns (the token itself, shown once; what is stored)."""
        token = new_token()
        stored = StoredToken(
            id=secrets.token_hex(4), sha256=hash_token(token), role=check_role(role),
            labels=check_labels(labels), name=name, created=self._now(),
        )
        self._tokens[stored.id] = stored
        self.save()
        return token, stored

    def remove(self, token_id: str) -> bool:
        if self._tokens.pop(token_id, None) is None:
            return False
        self.save()
        return True

    def authenticate(self, presented: Optional[str]) -> Optional[Principal]:
        """The principal of a presented token, or C{None}."""
        if not presented:
            return None
        digest = hash_token(presented)
        found = None
        # Compare against every entry (no early exit): the time taken does
        # not tell which, or whether any, stored hash is close.
        for stored in self._tokens.values():
            if hmac.compare_digest(stored.sha256, digest):
                found = stored
        return found.principal() if found is not None else None


def write_private_file(path: str, text: str) -> None:
    """Write C{text} to C{path} with mode 0600, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def bearer(header: Optional[bytes]) -> Optional[str]:
    """The token of an C{Authorization: Bearer ...} header value."""
    if not header:
        return None
    scheme, _, value = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
