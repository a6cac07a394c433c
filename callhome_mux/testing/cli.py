"""
C{callhome-mux-device}: run a simulated device that calls home.

One subcommand per call-home kind::

    callhome-mux-device ssh --connect 127.0.0.1:4334 --host-key dev.key \\
        --username admin --password-file pw.txt

Each subcommand is a L{Subcommand} in L{SUBCOMMANDS}: a name, a help line,
a function adding its options to an argparse parser, and a function
C{run(reactor, options) -> Deferred}.  Adding one (TLS, RESTCONF) means
appending a factory to L{SUBCOMMANDS}; nothing else here changes.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional

from twisted.internet import defer, task


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[..., defer.Deferred]


def parse_address(text: str):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def read_secret(path: Optional[str], env_name: str) -> Optional[str]:
    """A secret from a file (first line) or the environment: never from argv, which others can read."""
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    return os.environ.get(env_name)


# -- ssh ---------------------------------------------------------------------


def _ssh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connect", required=True, type=parse_address, metavar="HOST:PORT", help="manager to call")
    parser.add_argument(
        "--host-key", metavar="FILE", help="device host key (OpenSSH private key); created (Ed25519) if missing"
    )
    parser.add_argument("--username", default="netconf", help="user name the manager logs in as")
    parser.add_argument(
        "--password-file", metavar="FILE", help="accepted password (default: $CALLHOME_DEVICE_PASSWORD)"
    )
    parser.add_argument("--authorized-keys", metavar="FILE", help="accepted public keys, OpenSSH authorized_keys format")
    parser.add_argument(
        "--auth-methods", default=None, help="comma-separated: publickey,password,keyboard-interactive"
    )
    parser.add_argument("--device-id", help="send a Juniper outbound-ssh preamble with this DEVICE-ID")
    parser.add_argument(
        "--secret-file", metavar="FILE", help="outbound-ssh shared secret for the preamble HMAC (default: $CALLHOME_DEVICE_SECRET)"
    )
    parser.add_argument("--running-file", metavar="FILE", help="initial running configuration (XML)")
    parser.add_argument("--candidate", action="store_true", help="offer a candidate datastore")
    parser.add_argument("--keepalive", type=float, default=None, metavar="SECONDS", help="send keepalive@ietf.org this often")
    parser.add_argument(
        "--ignore-global-requests", action="store_true", help="never answer the manager's keepalives (a hung device)"
    )
    parser.add_argument(
        "--reconnect", type=float, default=None, metavar="SECONDS", help="call home again this long after a disconnect"
    )


def _load_or_create_host_key(path: Optional[str]):
    from twisted.conch.ssh import keys

    from callhome_mux.testing.ssh_device import generate_ed25519_key

    if path is None:
        return generate_ed25519_key()
    if os.path.exists(path):
        return keys.Key.fromFile(path)
    key = generate_ed25519_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.toString("openssh", subtype="v1"))
    return key


def build_ssh_device(options, clock=None):
    """The L{SSHCallHomeDevice} the command-line options describe."""
    from callhome_mux.testing.datastore import Datastore
    from callhome_mux.testing.ssh_device import JuniperPreamble, SSHCallHomeDevice

    authorized = []
    if options.authorized_keys:
        with open(options.authorized_keys, encoding="utf-8") as handle:
            authorized = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    running = None
    if options.running_file:
        with open(options.running_file, encoding="utf-8") as handle:
            running = handle.read()
    preamble = None
    if options.device_id:
        preamble = JuniperPreamble(options.device_id, secret=read_secret(options.secret_file, "CALLHOME_DEVICE_SECRET"))
    methods = options.auth_methods.split(",") if options.auth_methods else None
    return SSHCallHomeDevice(
        host_key=_load_or_create_host_key(options.host_key),
        username=options.username,
        password=read_secret(options.password_file, "CALLHOME_DEVICE_PASSWORD"),
        authorized_keys=authorized,
        auth_methods=methods,
        preamble=preamble,
        answer_global_requests=not options.ignore_global_requests,
        keepalive_interval=options.keepalive,
        clock=clock,
        datastore=Datastore(running, candidate=options.candidate),
    )


@defer.inlineCallbacks
def _ssh_run(reactor, options, out=None):
    out = out or sys.stdout
    device = build_ssh_device(options, clock=reactor)
    host, port = options.connect
    print(f"device host key: {device.host_key_line}", file=out)
    print(f"fingerprint: {device.fingerprint}", file=out)
    while True:
        try:
            connection = yield device.callHome(reactor, host, port)
        except Exception as error:
            print(f"cannot reach {host}:{port}: {error}", file=out)
        else:
            print(f"called home to {host}:{port}", file=out)
            yield connection.lost
            reason = connection.disconnect_reason or "connection closed"
            print(f"disconnected: {reason}", file=out)
        if options.reconnect is None:
            return 0
        yield task.deferLater(reactor, options.reconnect, lambda: None)


def _ssh() -> Subcommand:
    return Subcommand("ssh", "NETCONF over SSH call home (RFC 8071 §3): dial out, serve as SSH server", _ssh_arguments, _ssh_run)


def read_tls_material(certificate: str, key: str, trust=()):
    """(certificate chain PEM, key PEM, trust anchors) from the files a TLS subcommand names."""
    from cryptography import x509

    with open(certificate, "rb") as handle:
        certificate_pem = handle.read()
    with open(key, "rb") as handle:
        key_pem = handle.read()
    anchors = []
    for path in trust:
        with open(path, "rb") as handle:
            anchors.extend(x509.load_pem_x509_certificates(handle.read()))
    return certificate_pem, key_pem, anchors


def _netconf_tls_arguments(parser) -> None:
    parser.add_argument("--connect", required=True, type=parse_address, metavar="HOST:PORT", help="manager to call")
    parser.add_argument("--certificate", required=True, metavar="FILE", help="device certificate chain (PEM, leaf first)")
    parser.add_argument("--key", required=True, metavar="FILE", help="device private key (PEM)")
    parser.add_argument("--trust", metavar="FILE", action="append", default=[], help="CA the manager's certificate must chain to (repeatable)")
    parser.add_argument("--direction", choices=("silent", "client-hello"), default="silent", help="who sends the ClientHello (default: silent, RFC 8071)")
    parser.add_argument("--reconnect", type=float, metavar="SECONDS", help="call home again this long after a disconnect")


@defer.inlineCallbacks
def _netconf_tls_run(reactor, options, out=None):
    from callhome_mux.testing.tls_device import TLSCallHomeDevice

    out = out or sys.stdout
    host, port = options.connect
    certificate_pem, key_pem, anchors = read_tls_material(options.certificate, options.key, options.trust)
    device = TLSCallHomeDevice(certificate_pem, key_pem, anchors)
    while True:
        try:
            connection = yield device.callHome(reactor, host, port, options.direction)
        except Exception as error:
            print(f"cannot reach {host}:{port}: {error}", file=out)
        else:
            print(f"called home to {host}:{port} ({options.direction})", file=out)
            yield device.whenLost(connection)
            print("disconnected", file=out)
        if options.reconnect is None:
            return 0
        yield task.deferLater(reactor, options.reconnect, lambda: None)


def _netconf_tls() -> Subcommand:
    return Subcommand(
        "netconf-tls",
        "NETCONF over TLS call home (RFC 8071 §4, RFC 7589): dial out, serve NETCONF inside TLS",
        _netconf_tls_arguments,
        _netconf_tls_run,
    )


def _restconf() -> Subcommand:
    # Imported when the parser is built: the RESTCONF simulator is heavier.
    from callhome_mux.testing.restconf_device import restconf_subcommand

    return restconf_subcommand()


#: Factories of the subcommands, in --help order.  Add new kinds here.
SUBCOMMANDS: List[Callable[[], Subcommand]] = [_ssh, _netconf_tls, _restconf]


def build_parser(subcommands=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callhome-mux-device", description="Simulate a device that calls home.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for factory in subcommands or SUBCOMMANDS:
        subcommand = factory()
        sub = commands.add_parser(subcommand.name, help=subcommand.help, description=subcommand.help)
        subcommand.add_arguments(sub)
        sub.set_defaults(run=subcommand.run)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    options = build_parser().parse_args(argv)
    task.react(lambda reactor: options.run(reactor, options))


if __name__ == "__main__":
    main()
