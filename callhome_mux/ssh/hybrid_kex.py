"""
Client side of mlkem768x25519-sha256 (draft-ietf-sshm-mlkem-hybrid-kex),
which Twisted 26's conch implements only for servers.

Post-quantum hybrid: the shared secret is SHA-256(K_PQ || K_CL), where
K_PQ comes from ML-KEM-768 and K_CL from X25519, so the session stays safe
if either one holds.  The mixin hooks the two places of conch's client
transport that dispatch on the key-exchange kind; every other kind goes to
conch unchanged.
"""

from __future__ import annotations

import struct

from twisted.conch.ssh import _kex, keys, transport
from twisted.conch.ssh.common import NS, getNS

try:
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
except ImportError:  # cryptography < 48: no ML-KEM, no hybrid
    mlkem = None

HYBRID_AVAILABLE = mlkem is not None and hasattr(_kex, "isPQHybrid")

_MSG_KEX_HYBRID_INIT = 30  # shares its number with KEXDH_INIT


def _is_hybrid(kex_algorithm: bytes) -> bool:
    return HYBRID_AVAILABLE and _kex.isPQHybrid(kex_algorithm)


class HybridKexClientMixin:
    """Mix into an C{SSHClientTransport} subclass, before it in the bases."""

    def ssh_KEXINIT(self, packet: bytes):
        if not self._peerMayChooseHybrid():
            return transport.SSHClientTransport.ssh_KEXINIT(self, packet)
        if transport.SSHTransportBase.ssh_KEXINIT(self, packet) is None:
            return None
        if _is_hybrid(self.kexAlg):
            self._sendHybridInit()
            return True
        # Not hybrid after all: conch's client goes on from the negotiated
        # algorithm exactly as its own ssh_KEXINIT would.
        return self._continueClassicKexInit()

    def _peerMayChooseHybrid(self) -> bool:
        return any(_is_hybrid(name) for name in self.supportedKeyExchanges)

    def _continueClassicKexInit(self):
        if _kex.isEllipticCurve(self.kexAlg):
            self.ecPriv = self._generateECPrivateKey()
            self.ecPub = self.ecPriv.public_key()
            self.sendPacket(transport.MSG_KEX_DH_GEX_REQUEST_OLD, NS(self._encodeECPublicKey(self.ecPub)))
        elif _kex.isFixedGroup(self.kexAlg):
            self.g, self.p = _kex.getDHGeneratorAndPrime(self.kexAlg)
            self._startEphemeralDH()
            self.sendPacket(transport.MSG_KEXDH_INIT, self.dhSecretKeyPublicMP)
        else:
            self.sendPacket(
                transport.MSG_KEX_DH_GEX_REQUEST,
                struct.pack("!LLL", self._dhMinimalGroupSize, self._dhPreferredGroupSize, self._dhMaximalGroupSize),
            )
        return True

    def _sendHybridInit(self) -> None:
        self._hybridClassic = x25519.X25519PrivateKey.generate()
        self._hybridPQ = mlkem.MLKEM768PrivateKey.generate()
        # C_INIT = C_PK2 (ML-KEM public key) || C_PK1 (X25519 public key)
        self._hybridInit = (
            self._hybridPQ.public_key().public_bytes_raw() + self._hybridClassic.public_key().public_bytes_raw()
        )
        self.sendPacket(_MSG_KEX_HYBRID_INIT, NS(self._hybridInit))

    def ssh_KEX_DH_GEX_GROUP(self, packet: bytes):
        # Message 31 is also KEX_HYBRID_REPLY.
        if _is_hybrid(self.kexAlg):
            return self._hybridReply(packet)
        return transport.SSHClientTransport.ssh_KEX_DH_GEX_GROUP(self, packet)

    def _hybridReply(self, packet: bytes):
        host_key, server_reply, signature, _ = getNS(packet, 3)
        kex = _kex.getPQHybridKex(self.kexAlg)
        ciphertext_length = len(server_reply) - kex.c_pk1_length
        if ciphertext_length <= 0:
            self.sendDisconnect(transport.DISCONNECT_KEY_EXCHANGE_FAILED, b"invalid S_REPLY length")
            return None
        ciphertext, server_public = server_reply[:ciphertext_length], server_reply[ciphertext_length:]

        def verified(_):
            try:
                pq_secret = self._hybridPQ.decapsulate(ciphertext)
                classic_secret = self._hybridClassic.exchange(x25519.X25519PublicKey.from_public_bytes(server_public))
            except ValueError:
                self.sendDisconnect(transport.DISCONNECT_KEY_EXCHANGE_FAILED, b"invalid hybrid key exchange reply")
                return
            shared = NS(kex.hashProcessor(pq_secret + classic_secret).digest())
            h = kex.hashProcessor()
            for part in (self.ourVersionString, self.otherVersionString, self.ourKexInitPayload,
                         self.otherKexInitPayload, host_key, self._hybridInit, server_reply):
                h.update(NS(part))
            h.update(shared)
            exchange_hash = h.digest()
            if not keys.Key.fromString(host_key).verify(signature, exchange_hash):
                self.sendDisconnect(transport.DISCONNECT_KEY_EXCHANGE_FAILED, b"bad signature")
                return
            self._keySetup(shared, exchange_hash)

        d = self.verifyHostKey(host_key, b"")
        d.addCallback(verified)
        d.addErrback(
            lambda _: self.sendDisconnect(transport.DISCONNECT_HOST_KEY_NOT_VERIFIABLE, b"bad host key")
        )
        return d


def client_key_exchanges():
    """What a client with this mixin can negotiate: conch's list plus the hybrids."""
    names = list(_kex.getSupportedKeyExchanges()) if HYBRID_AVAILABLE else []
    return names or list(transport.SSHClientTransport.supportedKeyExchanges)
