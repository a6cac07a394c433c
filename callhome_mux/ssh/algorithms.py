"""
Which SSH algorithms we offer: the configured preferences, in their order,
kept only where the installed conch client can do them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Sequence

from twisted.conch.ssh import transport

from callhome_mux.ssh.hybrid_kex import client_key_exchanges
from callhome_mux.ssh.settings import SSHSettings


@dataclass(frozen=True)
class AlgorithmOffer:
    key_exchanges: List[bytes]
    host_key_algorithms: List[bytes]
    ciphers: List[bytes]
    macs: List[bytes]


def _keep_supported(preferred: Iterable[str], supported: Sequence[bytes]) -> List[bytes]:
    available = set(supported)
    return [name.encode("ascii") for name in preferred if name.encode("ascii") in available]


def offer_for(settings: SSHSettings) -> AlgorithmOffer:
    """
    The algorithm lists for our KEXINIT.

    Raises C{ValueError} naming the list when nothing configured is
    supported here: better a clear refusal at start than a handshake that
    fails for every device.
    """
    client = transport.SSHClientTransport
    offer = AlgorithmOffer(
        key_exchanges=_keep_supported(settings.key_exchanges, client_key_exchanges()),
        host_key_algorithms=_keep_supported(settings.host_key_algorithms, client.supportedPublicKeys),
        ciphers=_keep_supported(settings.ciphers, client.supportedCiphers),
        macs=_keep_supported(settings.macs, client.supportedMACs),
    )
    for name in ("key_exchanges", "host_key_algorithms", "ciphers", "macs"):
        if not getattr(offer, name):
            raise ValueError(f"ssh.{name}: none of the configured algorithms is supported by this Twisted conch")
    return offer
