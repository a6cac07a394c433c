"""Real first bytes of call-home connections, shared by the demux tests."""

from OpenSSL import SSL

# Identification strings as real servers send them.
SSH_BANNERS = {
    "openssh-debian": b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    "openssh-junos": b"SSH-2.0-OpenSSH_7.5\r\n",
    "cisco-ios": b"SSH-2.0-Cisco-1.25\r\n",
    "cisco-ios-compat": b"SSH-1.99-Cisco-1.25\r\n",
    "dropbear": b"SSH-2.0-dropbear_2022.83\r\n",
    "libssh-netopeer2": b"SSH-2.0-libssh_0.10.6\r\n",
    "conch": b"SSH-2.0-Twisted_26.10.0\r\n",
    "lf-only": b"SSH-2.0-ConfD-8.0\n",
}

# A KEXINIT-like binary packet that follows the banner in the same segment.
BINARY_AFTER_BANNER = b"\x00\x00\x04\x5c\x0a\x14" + bytes(range(256))

JUNIPER_PREAMBLE_LINES = [
    "MSG-ID: DEVICE-CONN-INFO",
    "MSG-VER: V1",
    "DEVICE-ID: mx960-lab-1",
    "HOST-KEY: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ2eVdqUp2Xx4uI0YQd+3tVHuKNqv3pY7QnNxtqH4OQm",
    "HMAC: 3f2a1b7c9d0e4f5a6b7c8d9e0f1a2b3c4d5e6f70",
]
JUNIPER_PREAMBLE = b"".join(line.encode() + b"\r\n" for line in JUNIPER_PREAMBLE_LINES)


def openssl_client_hello(max_version=None, alpn=None, server_name=b"manager.example") -> bytes:
    """The first flight of a real OpenSSL TLS client: its ClientHello record(s)."""
    context = SSL.Context(SSL.TLS_METHOD)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    if alpn:
        context.set_alpn_protos(alpn)
    connection = SSL.Connection(context, None)
    connection.set_tlsext_host_name(server_name)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


PROXY_V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 4334\r\n"
PROXY_V2_SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def proxy_v2(source=("192.0.2.10", 51000), destination=("198.51.100.1", 4334)) -> bytes:
    import socket
    import struct

    addresses = (
        socket.inet_aton(source[0]) + socket.inet_aton(destination[0]) + struct.pack("!HH", source[1], destination[1])
    )
    return PROXY_V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(addresses)) + addresses


GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "binary": b"\x00\x01\x02\x03\xff\xfe",
    "ssh1": b"SSH-1.5-OldServer\r\n",
    "tls-alert": b"\x15\x03\x03\x00\x02\x02\x28",
    "tls-bad-version": b"\x16\x09\x01\x00\x10\x01",
    "tls-server-hello": b"\x16\x03\x03\x00\x40\x02" + b"\x00" * 64,
    "sslv2": b"\x80\x2e\x01\x00\x02",
    "proxy-unexpected": PROXY_V1,
    "redis-ping": b"*1\r\n$4\r\nPING\r\n",
}
