"""
The device model: who may call home, how they prove it, how we log in.

A device is identified by what it proves (an SSH host key, a TLS
certificate), never by its address.  Secrets (passwords, private keys)
live only in L{Credentials}; its C{repr} hides them and nothing here puts
them into an event.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from callhome_mux.settings import ConfigError


def ssh_fingerprint(key_blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob: C{SHA256:base64-without-padding}."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def normalise_tls_fingerprint(text: str) -> str:
    """
    A certificate fingerprint as C{sha256:hex}, lower case, no colons.

    Accepts C{AB:CD:...}, C{sha256:abcd...}, C{SHA256:AB:CD...} and RFC 7589's
    C{04:AB:...} tls-fingerprint form (hash-algorithm octet 04 = SHA-256).
    """
    value = text.strip()
    algorithm = "sha256"
    if ":" in value and value.split(":", 1)[0].lower() in ("sha256", "sha-256"):
        value = value.split(":", 1)[1]
    hexdigits = value.replace(":", "").lower()
    if len(hexdigits) == 66 and hexdigits.startswith("04"):
        hexdigits = hexdigits[2:]
    # strip() leaves nothing exactly when every character is a hex digit
    # (one C call: asked once per TLS call home).
    if len(hexdigits) != 64 or hexdigits.strip("0123456789abcdef"):
        raise ConfigError(f"not a SHA-256 certificate fingerprint: {text!r}")
    return f"{algorithm}:{hexdigits}"


@dataclass(frozen=True)
class Credentials:
    """How to log in to a device over SSH.  Never logged."""

    username: str = "netconf"
    password: Optional[str] = field(default=None, repr=False)
    #: Path of a private key file (OpenSSH or PEM format).
    private_key_file: Optional[str] = None
    private_key_passphrase: Optional[str] = field(default=None, repr=False)
    #: Where C{password} was read from, when the configuration named a file
    #: rather than the password itself (shown; the password is not).
    password_file: Optional[str] = None

    def describe(self) -> Dict[str, object]:
        """What may be shown about these credentials: never the secrets themselves."""
        return {
            "username": self.username,
            "password": self.password is not None,
            "password_file": self.password_file,
            "private_key_file": self.private_key_file,
        }


@dataclass(frozen=True)
class CertToNameRule:
    """
    One RFC 7589 cert-to-name entry.

    C{fingerprint} matches the device certificate or any CA certificate in
    its chain.  C{map_type} says where the device id comes from:
    C{specified} (C{name}), C{san-rfc822-name}, C{san-dns-name},
    C{san-ip-address}, C{san-any}, C{common-name}, or C{serial-number}
    (the subject's serialNumber attribute, as IDevID certificates carry).
    """

    fingerprint: str
    map_type: str = "san-any"
    name: Optional[str] = None
    #: Rules are tried in increasing C{priority} (RFC 7589's C{id}).
    priority: int = 0

    MAP_TYPES = ("specified", "san-rfc822-name", "san-dns-name", "san-ip-address", "san-any", "common-name", "serial-number")

    def __post_init__(self):
        if self.map_type not in self.MAP_TYPES:
            raise ConfigError(f"map-type must be one of {', '.join(self.MAP_TYPES)}, got {self.map_type!r}", "map-type")
        if self.map_type == "specified" and not self.name:
            raise ConfigError("map-type 'specified' needs a name", "name")
        try:
            object.__setattr__(self, "fingerprint", normalise_tls_fingerprint(self.fingerprint))
        except ConfigError as error:
            raise ConfigError(str(error), "fingerprint") from None


@dataclass(frozen=True)
class Device:
    """One device that may call home."""

    id: str
    #: SSH host keys that prove this device: OpenSSH public key lines
    #: (C{ssh-ed25519 AAAA...}) or C{SHA256:...} fingerprints.
    ssh_host_keys: Tuple[str, ...] = ()
    #: SHA-256 fingerprints of device certificates pinned to this device.
    tls_fingerprints: Tuple[str, ...] = ()
    #: Identity the certificate must present (checked with service_identity):
    #: C{dns:name}, C{ip:address}, C{uri:...}.  Empty: no extra check.
    tls_expected_identity: Optional[str] = None
    credentials: Credentials = field(default_factory=Credentials)
    #: C{netconf-ssh}, C{netconf-tls}, C{restconf}, or C{None} (decide per connection).
    protocol: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    #: Shared secret for a Juniper outbound-ssh preamble HMAC.  Never logged.
    outbound_ssh_secret: Optional[str] = field(default=None, repr=False)

    PROTOCOLS = ("netconf-ssh", "netconf-tls", "restconf")

    def __post_init__(self):
        if not self.id or not isinstance(self.id, str):
            raise ConfigError("a device needs a non-empty id", "id")
        if self.protocol is not None and self.protocol not in self.PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(self.PROTOCOLS)}, got {self.protocol!r}", "protocol")
        object.__setattr__(self, "ssh_host_keys", tuple(self.ssh_host_keys))
        object.__setattr__(
            self, "tls_fingerprints", tuple(normalise_tls_fingerprint(fp) for fp in self.tls_fingerprints)
        )


class DeviceDirectory:
    """
    The devices known now, indexed by what proves them.

    The SSH and TLS layers ask this; the inventory (persistent store,
    configuration reload, HTTP API) keeps it current with L{replace}.
    """

    def __init__(self, devices: List[Device] | Tuple[Device, ...] = ()):
        self._devices: Dict[str, Device] = {}
        self._by_ssh_fingerprint: Dict[str, str] = {}
        self._by_tls_fingerprint: Dict[str, str] = {}
        self.replace(devices)

    def replace(self, devices) -> None:
        """Swap in a whole new set of devices (reload, or a store change)."""
        by_id: Dict[str, Device] = {}
        by_ssh: Dict[str, str] = {}
        by_tls: Dict[str, str] = {}
        for device in devices:
            if device.id in by_id:
                raise ConfigError(f"device id {device.id!r} appears twice", "devices")
            by_id[device.id] = device
            for key in device.ssh_host_keys:
                fingerprint = ssh_key_fingerprint_from_text(key)
                owner = by_ssh.setdefault(fingerprint, device.id)
                if owner != device.id:
                    raise ConfigError(f"SSH host key {fingerprint} is claimed by {owner!r} and {device.id!r}", "devices")
            for fingerprint in device.tls_fingerprints:
                owner = by_tls.setdefault(fingerprint, device.id)
                if owner != device.id:
                    raise ConfigError(f"certificate {fingerprint} is claimed by {owner!r} and {device.id!r}", "devices")
        self._devices, self._by_ssh_fingerprint, self._by_tls_fingerprint = by_id, by_ssh, by_tls

    def get(self, device_id: str) -> Optional[Device]:
        return self._devices.get(device_id)

    def all(self) -> List[Device]:
        return list(self._devices.values())

    def by_ssh_fingerprint(self, fingerprint: str) -> Optional[Device]:
        device_id = self._by_ssh_fingerprint.get(fingerprint)
        return self._devices.get(device_id) if device_id else None

    def by_tls_fingerprint(self, fingerprint: str) -> Optional[Device]:
        device_id = self._by_tls_fingerprint.get(normalise_tls_fingerprint(fingerprint))
        return self._devices.get(device_id) if device_id else None

    def __len__(self) -> int:
        return len(self._devices)


def ssh_key_fingerprint_from_text(text: str) -> str:
    """
    The SHA256 fingerprint for a configured host key: either a fingerprint
    already (C{SHA256:...}) or an OpenSSH public key line.
    """
    value = text.strip()
    if value.startswith("SHA256:"):
        return value
    parts = value.split()
    if len(parts) < 2:
        raise ConfigError(f"not an OpenSSH public key or SHA256 fingerprint: {text[:40]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ConfigError(f"host key is not valid base64: {text[:40]!r}") from None
    return ssh_fingerprint(blob)
