"""
The floor: the least a NETCONF-over-SSH call-home manager can do on twisted.conch.

It accepts TCP connections, runs conch's C{SSHClientTransport} on each
accepted socket, accepts only pinned host keys, logs in with a password,
opens one session channel, requests the C{netconf} subsystem, sends a
NETCONF <hello> and waits for the device's <hello> (the end-of-message
delimiter); then it holds the session and does nothing else.  No
demultiplexer, no events, no NETCONF parsing, conch's default algorithm
lists and channel window.  callhome-mux is measured against this.

Run by bench/storm.py and bench/hold.py as the server process (same control
protocol as bench/_server.py).  By hand::

    python bench/floor_conch.py --devices 10      # prints {"port": ...}, then reads commands
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.conch.ssh import channel, common, connection, transport, userauth  # noqa: E402
from twisted.internet import defer, protocol  # noqa: E402

from bench._common import emit, process_stats, run_reactor, serve_control  # noqa: E402

HELLO = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities>'
    b"<capability>urn:ietf:params:netconf:base:1.0</capability>"
    b"<capability>urn:ietf:params:netconf:base:1.1</capability>"
    b"</capabilities></hello>]]>]]>"
)


class FloorTransport(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey, fingerprint):
        if hostKey in self.factory.pinned:
            return defer.succeed(True)
        return defer.fail(Exception("host key not pinned"))

    def connectionSecure(self):
        self.requestService(FloorAuth(self.factory.username, FloorConnection()))

    def connectionLost(self, reason):
        transport.SSHClientTransport.connectionLost(self, reason)
        self.factory.connections.discard(self)


class FloorAuth(userauth.SSHUserAuthClient):
    preferredOrder = [b"password"]

    def getPassword(self, prompt=None):
        return defer.succeed(self.transport.factory.password)


class FloorConnection(connection.SSHConnection):
    def serviceStarted(self):
        connection.SSHConnection.serviceStarted(self)
        self.openChannel(FloorChannel(conn=self))


class FloorChannel(channel.SSHChannel):
    name = b"session"
    buffer = b""
    hello_done = False

    def channelOpen(self, specificData):
        d = self.conn.sendRequest(self, b"subsystem", common.NS(b"netconf"), wantReply=True)
        d.addCallback(lambda _: self.write(HELLO))
        d.addErrback(lambda _: self.loseConnection())

    def dataReceived(self, data):
        if self.hello_done:
            return
        self.buffer += data
        if b"]]>]]>" in self.buffer:
            self.hello_done = True
            self.buffer = b""
            self.conn.transport.factory.hellos += 1


class FloorFactory(protocol.Factory):
    protocol = FloorTransport
    noisy = False

    def __init__(self, pinned, username: bytes, password: bytes):
        self.pinned = frozenset(pinned)
        self.username = username
        self.password = password
        self.hellos = 0
        self.connections = set()

    def buildProtocol(self, addr):
        p = protocol.Factory.buildProtocol(self, addr)
        self.connections.add(p)
        return p


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("ssh",), default="ssh")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--profile")
    args = parser.parse_args()

    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import epollreactor

        epollreactor.install()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    globalLogBeginner.beginLoggingTo([], redirectStandardIO=False)

    from callhome_mux.testing import fleet

    factory = FloorFactory(
        [fleet.device_fingerprint_blob(i) for i in range(args.devices)],
        fleet.USERNAME.encode(),
        fleet.PASSWORD.encode(),
    )
    port = reactor.listenTCP(args.port, factory, backlog=4096, interface="127.0.0.1")
    gc.collect()

    def gc_command():
        gc.collect()
        return {"gc": True, **process_stats()}

    serve_control({
        "settle": lambda: {"settled": True},  # nothing is written behind
        "stats": lambda: {"sessions": factory.hellos, "connections": len(factory.connections), **process_stats()},
        "gc": gc_command,
    })
    emit(port=port.getHost().port, pid=os.getpid(), wiring="floor", **process_stats())
    run_reactor(reactor, args.profile)


if __name__ == "__main__":
    main()
