"""
Logging in to the device: public key, password, keyboard-interactive.

Only the credentials of the device proven by the host key are ever used
(RFC 8071 C7): this object is built after the host key check, with that
device's credentials, and knows no others.  Each method is tried at most
once, so a wrong password is never retried in a loop.
"""

from __future__ import annotations

from typing import Callable, List, Optional

from twisted.conch.ssh import keys, userauth
from twisted.conch.ssh.common import NS, getNS
from twisted.internet import defer

from callhome_mux.inventory.model import Credentials
from callhome_mux.ssh.conch_log import QuietLogger

# RSA signature algorithms by preference; plain ssh-rsa (SHA-1) only for a
# server that does not tell us what it accepts (RFC 8308 server-sig-algs).
_RSA_SIGNATURES = (b"rsa-sha2-512", b"rsa-sha2-256")


class CredentialError(Exception):
    """The configured private key cannot be used (missing, unreadable, wrong passphrase)."""


def load_private_key(credentials: Credentials) -> Optional[keys.Key]:
    """The private key of C{credentials}, or C{None} when it has none."""
    if not credentials.private_key_file:
        return None
    passphrase = credentials.private_key_passphrase
    try:
        return keys.Key.fromFile(
            credentials.private_key_file, passphrase=passphrase.encode("utf-8") if passphrase else None
        )
    except (OSError, keys.BadKeyError, keys.EncryptedKeyError) as error:
        # The message names the file and the kind of problem, never the passphrase.
        raise CredentialError(f"cannot use private key file {credentials.private_key_file}: {type(error).__name__}")


class DeviceUserAuth(userauth.SSHUserAuthClient):
    """
    @param on_failed: called with (reason, methods_tried, methods_offered)
        when no method is left; the connection is then closed by the caller.
    @param on_succeeded: called with the method that succeeded.
    """

    preferredOrder = [b"publickey", b"password", b"keyboard-interactive"]
    _log = QuietLogger(namespace="twisted.conch.ssh.userauth")

    def __init__(
        self,
        credentials: Credentials,
        private_key: Optional[keys.Key],
        instance,
        on_failed: Callable[[str, List[str], List[str]], None],
        on_succeeded: Callable[[str], None],
    ):
        super().__init__(credentials.username.encode("utf-8"), instance)
        self._password = credentials.password
        self._private_key = private_key
        self._on_failed = on_failed
        self._on_succeeded = on_succeeded
        self._attempted: List[str] = []
        self._finished = False

    def _usable(self, method: bytes) -> bool:
        if method == b"publickey":
            return self._private_key is not None
        if method in (b"password", b"keyboard-interactive"):
            return self._password is not None
        return False

    def ssh_USERAUTH_FAILURE(self, packet: bytes):
        offered_text, partial = getNS(packet)
        if partial[:1] not in (b"", b"\x00"):
            self.authenticatedWith.append(self.lastAuth)
        offered = [m for m in offered_text.split(b",") if m]
        for method in self.preferredOrder:
            name = method.decode("ascii")
            if method in offered and name not in self._attempted and self._usable(method):
                self._attempted.append(name)
                return self.tryAuth(method)
        self._finished = True
        if not self._attempted:
            reason = "no configured credential fits the methods the device offers"
        else:
            reason = "the device refused every credential offered"
        self._on_failed(reason, list(self._attempted), [m.decode("ascii", "replace") for m in offered])
        return None

    def ssh_USERAUTH_SUCCESS(self, packet: bytes):
        self._finished = True
        self._on_succeeded(self.lastAuth.decode("ascii"))
        return super().ssh_USERAUTH_SUCCESS(packet)

    # -- methods -----------------------------------------------------------

    def auth_publickey(self):
        # Sign straight away (RFC 4252 §7 allows skipping the query), with
        # an RSA signature algorithm the server accepts.
        key = self._private_key
        algorithm = self._signature_algorithm(key)
        signed = (
            NS(self.transport.sessionID)
            + bytes((userauth.MSG_USERAUTH_REQUEST,))
            + NS(self.user)
            + NS(self.instance.name)
            + NS(b"publickey")
            + b"\x01"
            + NS(algorithm)
            + NS(key.public().blob())
        )
        signature = key.sign(signed, signatureType=algorithm)
        self.askForAuth(b"publickey", b"\x01" + NS(algorithm) + NS(key.public().blob()) + NS(signature))
        return True

    def _signature_algorithm(self, key: keys.Key) -> bytes:
        if key.type() != "RSA":
            return key.sshType()
        accepted = self.transport.peerExtensions.get(b"server-sig-algs")
        if accepted is None:
            return b"ssh-rsa"
        names = accepted.split(b",")
        for algorithm in _RSA_SIGNATURES:
            if algorithm in names:
                return algorithm
        return b"ssh-rsa"

    def getPassword(self, prompt=None):
        return defer.succeed(self._password.encode("utf-8"))

    def getGenericAnswers(self, name, instruction, prompts):
        # Keyboard-interactive as devices use it: a password prompt (hidden
        # input).  Visible prompts we cannot know the answer to get "".
        answers = []
        for prompt, echo in prompts:
            if not echo or b"password" in prompt.lower():
                answers.append(self._password)
            else:
                answers.append("")
        return defer.succeed(answers)

    def ssh_USERAUTH_BANNER(self, packet: bytes):
        # Devices send legal banners; nothing to do with them here.
        return None
