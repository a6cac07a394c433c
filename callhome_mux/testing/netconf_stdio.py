"""
The device side of NETCONF on standard input and output.

For OpenSSH's C{sshd}: C{Subsystem netconf python -m
callhome_mux.testing.netconf_stdio} serves NETCONF in the subsystem, so a
real sshd can play a calling-home device in tests.  Options::

    --running XML         initial running configuration (content of <data>)
    --running-file PATH   the same, read from a file (no shell quoting needed)
    --candidate     the device has a candidate datastore
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m callhome_mux.testing.netconf_stdio")
    parser.add_argument("--running", default=None, help="initial running configuration (XML)")
    parser.add_argument("--running-file", default=None, help="file holding the initial running configuration")
    parser.add_argument("--candidate", action="store_true", help="offer a candidate datastore")
    options = parser.parse_args(argv)
    running = options.running
    if options.running_file:
        with open(options.running_file, encoding="utf-8") as handle:
            running = handle.read()

    from twisted.internet import reactor, stdio

    from callhome_mux.testing.datastore import Datastore
    from callhome_mux.testing.netconf_device import NetconfServerProtocol

    class StdioNetconf(NetconfServerProtocol):
        def connectionLost(self, reason=None):
            NetconfServerProtocol.connectionLost(self, reason)
            if reactor.running:
                reactor.stop()

    server = StdioNetconf(Datastore(running, candidate=options.candidate), clock=reactor)
    stdio.StandardIO(server)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
