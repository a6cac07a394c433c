"""
Settings of the SSH call-home layer (section C{[ssh]}).

Algorithm lists are preferences, strongest first; names the local conch
cannot do are dropped when the transport is built (see
L{callhome_mux.ssh.algorithms}), so a list written for a newer Twisted
still starts on an older one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from callhome_mux.settings import ConfigError, at_least, positive

#: Strongest first.  mlkem768x25519 is post-quantum hybrid; it is used when
#: the installed conch client implements it.
DEFAULT_KEY_EXCHANGES = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp521",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp256",
    "diffie-hellman-group-exchange-sha256",
)
DEFAULT_HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp256",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
# CBC modes, 3des, hmac-md5 and hmac-sha1 stay out by default (OpenSSH
# made the same choice); an old device can have them back per setting.
DEFAULT_CIPHERS = ("aes256-ctr", "aes192-ctr", "aes128-ctr")
# hmac-sha2-256 first, as OpenSSH orders them: as strong as an HMAC needs to be,
# and about twice as fast as -512 where the CPU has SHA extensions (bulk replies).
DEFAULT_MACS = ("hmac-sha2-256", "hmac-sha2-512")

#: Never offered, whatever the configuration says: broken beyond use.
FORBIDDEN_ALGORITHMS = frozenset({"ssh-dss", "3des-cbc", "hmac-md5", "none", "diffie-hellman-group1-sha1"})


@dataclass(frozen=True)
class SSHSettings:
    #: Seconds without any byte from the device before we send a keepalive.
    keepalive_interval: float = 30.0
    #: Keepalives left unanswered in a row before the session is declared lost.
    keepalive_max_missed: int = 3
    #: Seconds from the TCP handoff to a usable NETCONF session (key
    #: exchange, authentication, channel, hello).
    auth_timeout: float = 30.0
    #: OpenSSH known_hosts file whose host field is the device id.
    known_hosts: Optional[str] = None
    #: Keep twisted.conch's own debug-level log lines (one per key exchange
    #: and service start).  Off: they cost CPU in a storm and twistd's
    #: default log level drops them anyway.
    conch_debug_log: bool = False
    #: Credentials for a device that has none of its own.
    default_username: Optional[str] = None
    default_password: Optional[str] = field(default=None, repr=False)
    default_private_key_file: Optional[str] = None
    default_private_key_passphrase: Optional[str] = field(default=None, repr=False)
    #: Our side's receive window per channel: a large <get-config> reply
    #: flows without waiting for window adjusts.
    channel_window: int = 2 * 1024 * 1024
    channel_max_packet: int = 32768
    key_exchanges: Tuple[str, ...] = DEFAULT_KEY_EXCHANGES
    host_key_algorithms: Tuple[str, ...] = DEFAULT_HOST_KEY_ALGORITHMS
    ciphers: Tuple[str, ...] = DEFAULT_CIPHERS
    macs: Tuple[str, ...] = DEFAULT_MACS
    #: SSH subsystem that carries NETCONF (RFC 6242).
    subsystem: str = "netconf"

    def default_credentials(self):
        """The fallback L{Credentials}, or C{None} when no default is configured."""
        from callhome_mux.inventory.model import Credentials

        if not (self.default_username or self.default_password or self.default_private_key_file):
            return None
        return Credentials(
            username=self.default_username or "netconf",
            password=self.default_password,
            private_key_file=self.default_private_key_file,
            private_key_passphrase=self.default_private_key_passphrase,
        )

    def __post_init__(self):
        positive(self.keepalive_interval, "keepalive_interval")
        at_least(self.keepalive_max_missed, 1, "keepalive_max_missed")
        positive(self.auth_timeout, "auth_timeout")
        at_least(self.channel_window, 32768, "channel_window")
        at_least(self.channel_max_packet, 1024, "channel_max_packet")
        for key in ("key_exchanges", "host_key_algorithms", "ciphers", "macs"):
            names = tuple(getattr(self, key))
            object.__setattr__(self, key, names)
            if not names:
                raise ConfigError("needs at least one algorithm", key)
            forbidden = sorted(FORBIDDEN_ALGORITHMS.intersection(names))
            if forbidden:
                raise ConfigError(f"refusing weak algorithm(s) {', '.join(forbidden)}", key)
