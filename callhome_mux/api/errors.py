"""
Errors of the HTTP API, as exceptions handlers raise and JSON clients read.

Every error response is C{{"error": {"status": N, "message": "...", ...}}};
extra fields (the rpc-errors of a NETCONF reply, say) go beside
C{message}.  Messages never carry secrets: handlers build them from ids,
fingerprints and other layers' exception texts, which are secret-free by
those layers' contracts.
"""

from __future__ import annotations

from typing import Any, Dict


class APIError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def document(self) -> Dict[str, Any]:
        return {"error": {"status": self.status, "message": self.message, **self.extra}}


def not_found(what: str) -> APIError:
    return APIError(404, f"{what} not found")


def bad_request(message: str, **extra: Any) -> APIError:
    return APIError(400, message, **extra)


def forbidden(needed: str) -> APIError:
    return APIError(403, f"this token's role may not do this (needs {needed})")


UNAUTHORIZED = "a valid bearer token is required (Authorization: Bearer ...)"
