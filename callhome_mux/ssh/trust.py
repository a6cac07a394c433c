"""
Who is calling: the device is identified by the SSH host key it proves,
before anything else happens on the connection.

A L{HostKeyTrust} is any callable C{(presented_key, claimed_device_id) ->
HostKeyVerdict} (or a Deferred of one), so the inventory can later plug in
a policy of its own (for example a "pending approval" queue).  The default,
L{DirectoryTrust}, trusts keys configured on devices in the
L{DeviceDirectory} and keys in an OpenSSH C{known_hosts} file whose host
field is the device's id.  There is no trust on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from binascii import b2a_base64
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from twisted.conch.ssh.common import getNS
from twisted.internet import defer

from callhome_mux.inventory.model import Device, DeviceDirectory

try:  # CPython's own SHA-256: no OpenSSL provider lookup per digest
    from _sha256 import sha256 as _sha256
except ImportError:  # pragma: no cover - a build without it
    _sha256 = hashlib.sha256

#: Event names a verdict may carry.
HOSTKEY_UNKNOWN = "ssh.hostkey.unknown"
HOSTKEY_MISMATCH = "ssh.hostkey.mismatch"
DEVICE_DISABLED = "ssh.device.refused"


class PresentedHostKey:
    """
    The host key the device proved in the key exchange (public, not secret).

    The handshake path reads C{fingerprint}, C{algorithm} and
    C{openssh_line} for every key, so they are worked out once, at once
    (plain attributes: C{functools.cached_property} takes a lock per first
    access).
    """

    __slots__ = ("blob", "fingerprint", "algorithm", "openssh_line")

    def __init__(self, blob: bytes):
        self.blob = blob
        # ssh_fingerprint's value (tests compare), without the base64
        # module's wrappers and OpenSSL's digest lookup per call.
        digest = _sha256(blob).digest()
        self.fingerprint = "SHA256:" + b2a_base64(digest, newline=False).decode("ascii").rstrip("=")
        self.algorithm = _key_type(blob)
        #: C{algorithm base64}: what an operator pastes into the device entry.
        self.openssh_line = f"{self.algorithm} {b2a_base64(blob, newline=False).decode('ascii')}"

    def __eq__(self, other) -> bool:
        return isinstance(other, PresentedHostKey) and other.blob == self.blob

    def __hash__(self) -> int:
        return hash(self.blob)

    def __repr__(self) -> str:
        return f"PresentedHostKey({self.fingerprint})"


def _key_type(blob: bytes) -> str:
    # The blob starts with its key type (RFC 4253 §6.6), which is what
    # Key.sshType() gives: read it there instead of parsing the whole key
    # (~30 us per connection in a storm).  conch parses the key anyway to
    # check the exchange signature.
    # A blob that is not a key at all is refused by conch afterwards; it
    # must not break the handshake code (or its events) before that.
    try:
        name, _ = getNS(blob)
    except (ValueError, IndexError, struct.error):
        return "unknown"
    return name.decode("ascii", "replace") or "unknown"


@dataclass(frozen=True)
class HostKeyVerdict:
    """A trusted device, or why the connection must end."""

    device: Optional[Device] = None
    #: Event to report when refused (one of the names above).
    event: Optional[str] = None
    reason: str = ""
    #: Where the trust came from: "directory" or "known_hosts".
    source: Optional[str] = None

    @property
    def trusted(self) -> bool:
        return self.device is not None


#: C{(presented key, claimed device id or None, peer "host:port")} -> a
#: verdict, or a Deferred of one.  The peer address is for the record
#: (pending entries, address throttling), never for trust.
HostKeyTrust = Callable[[PresentedHostKey, Optional[str], str], Union[HostKeyVerdict, defer.Deferred]]


class KnownHosts:
    """
    An OpenSSH known_hosts file whose host names are device ids.

    Plain entries (C{name1,name2 keytype base64}) and hashed ones
    (C{|1|salt|hash keytype base64}) are read; markers (C{@revoked},
    C{@cert-authority}) and host patterns are not supported and are
    skipped.  The file is re-read when its modification time changes, so
    an operator's edit applies to the next connection.
    """

    def __init__(self, path: str):
        self.path = path
        self._stamp: Optional[Tuple[float, int]] = None
        self._plain: Dict[str, List[bytes]] = {}
        self._hashed: List[Tuple[bytes, bytes, bytes]] = []

    def _load(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._plain, self._hashed, self._stamp = {}, [], None
            return
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return
        plain: Dict[str, List[bytes]] = {}
        hashed: List[Tuple[bytes, bytes, bytes]] = []
        with open(self.path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.split()
                if len(fields) < 3 or fields[0].startswith(("#", "@")):
                    continue
                try:
                    blob = base64.b64decode(fields[2], validate=True)
                except ValueError:
                    continue
                if fields[0].startswith("|1|"):
                    parts = fields[0].split("|")
                    try:
                        hashed.append((base64.b64decode(parts[2]), base64.b64decode(parts[3]), blob))
                    except (IndexError, ValueError):
                        continue
                else:
                    for name in fields[0].split(","):
                        plain.setdefault(name, []).append(blob)
        self._plain, self._hashed, self._stamp = plain, hashed, stamp

    def keys_for(self, name: str) -> List[bytes]:
        """The key blobs listed for host C{name} (plain or hashed entries)."""
        self._load()
        found = list(self._plain.get(name, ()))
        for salt, digest, blob in self._hashed:
            if hmac.compare_digest(hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest(), digest):
                found.append(blob)
        return found

    def plain_names_for(self, blob: bytes) -> List[str]:
        """Host names of plain entries listing C{blob} (hashed names cannot be read back)."""
        self._load()
        return [name for name, blobs in self._plain.items() if blob in blobs]


class DirectoryTrust:
    """
    The default host-key policy: keys on directory devices, then known_hosts.

    A known_hosts entry for a name that is not in the directory still
    identifies a device of that id (with the default credentials).
    """

    def __init__(self, directory: DeviceDirectory, known_hosts: Optional[KnownHosts] = None):
        self.directory = directory
        self.known_hosts = known_hosts

    def __call__(
        self, key: PresentedHostKey, claimed_device_id: Optional[str] = None, peer: Optional[str] = None
    ) -> HostKeyVerdict:
        fingerprint = key.fingerprint
        device, source = self._identify(key, claimed_device_id)
        if claimed_device_id is not None:
            if device is not None and device.id != claimed_device_id:
                return HostKeyVerdict(
                    event=HOSTKEY_MISMATCH,
                    reason=f"the host key {fingerprint} belongs to {device.id!r}, not to the claimed device",
                )
            if device is None and self._knows(claimed_device_id):
                return HostKeyVerdict(
                    event=HOSTKEY_MISMATCH,
                    reason="the host key differs from the one known for the claimed device",
                )
        if device is None:
            return HostKeyVerdict(event=HOSTKEY_UNKNOWN, reason="no device is known by this host key")
        if not device.enabled:
            return HostKeyVerdict(event=DEVICE_DISABLED, reason="the device is disabled")
        return HostKeyVerdict(device=device, source=source)

    def _identify(self, key: PresentedHostKey, claimed: Optional[str]) -> Tuple[Optional[Device], Optional[str]]:
        device = self.directory.by_ssh_fingerprint(key.fingerprint)
        if device is not None:
            return device, "directory"
        if self.known_hosts is None:
            return None, None
        # Hashed entries only answer "is this name's key?", so ask for the
        # claimed name and the directory's names first; then plain names.
        candidates = ([claimed] if claimed else []) + [d.id for d in self.directory.all()]
        for name in candidates:
            if key.blob in self.known_hosts.keys_for(name):
                return self._device_named(name), "known_hosts"
        for name in self.known_hosts.plain_names_for(key.blob):
            return self._device_named(name), "known_hosts"
        return None, None

    def _device_named(self, name: str) -> Device:
        return self.directory.get(name) or Device(id=name)

    def _knows(self, device_id: str) -> bool:
        device = self.directory.get(device_id)
        if device is not None and device.ssh_host_keys:
            return True
        return bool(self.known_hosts and self.known_hosts.keys_for(device_id))


def key_blob_from_text(text: str) -> Optional[bytes]:
    """The key blob in C{keytype base64 [comment]} or bare C{base64}; C{None} if unreadable."""
    fields = text.strip().split()
    if not fields:
        return None
    candidate = fields[1] if len(fields) >= 2 else fields[0]
    try:
        return base64.b64decode(candidate, validate=True)
    except ValueError:
        return None

