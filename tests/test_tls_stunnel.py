"""
A real TLS server from Debian as the calling-home device: stunnel in inetd mode.

socat dials our listener and runs stunnel on that connection
(C{socat TCP:127.0.0.1:PORT EXEC:'stunnel4 CONF'}); stunnel, configured
without C{accept}, is the silent TLS server of RFC 8071 §4, checks our
certificate against the test CA, and runs the device's NETCONF server
(C{python -m callhome_mux.testing.netconf_stdio}) on the decrypted stream.

CI installs stunnel4 and socat: a missing one fails the test rather than
skipping it, so that the interoperability check cannot vanish silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from callhome_mux.inventory.model import Device
from callhome_mux.testing.certs import test_pki
from tests.test_tls_handler import SILENT, Manager


def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"{' or '.join(names)} is not installed (CI installs it: apt-get install stunnel4 socat)")


class _Watched(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.stderr = b""

    def errReceived(self, data):
        self.stderr += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class StunnelDeviceTests(TestCase):
    def stunnel_device(self, manager: Manager, certificate: str, key: str) -> _Watched:
        stunnel = _tool("stunnel4", "stunnel")
        socat = _tool("socat")
        directory = os.path.dirname(manager.paths["ca.crt"])
        config = os.path.join(directory, "stunnel-device.conf")
        self.log_file = os.path.join(directory, "stunnel.log")
        with open(config, "w") as handle:
            handle.write(
                "\n".join(
                    [
                        "foreground = yes",
                        "pid =",
                        "syslog = no",
                        f"output = {self.log_file}",
                        "debug = info",
                        f"cert = {certificate}",
                        f"key = {key}",
                        f"CAfile = {manager.paths['ca.crt']}",
                        # Mutual authentication: the manager must show a certificate from the CA.
                        "verifyChain = yes",
                        "requireCert = yes",
                        f"exec = {sys.executable}",
                        f"execArgs = python -m callhome_mux.testing.netconf_stdio",
                        "",
                    ]
                )
            )
        port = manager.port.getHost().port
        watched = _Watched()
        process = reactor.spawnProcess(
            watched, socat, [socat, f"TCP:127.0.0.1:{port}", f"EXEC:{stunnel} {config}"], env=dict(os.environ)
        )
        self.addCleanup(self._stop, process, watched)
        return watched

    def _stop(self, process, watched: _Watched) -> defer.Deferred:
        # Normally socat has ended by now (the listener dropped the
        # connection); if not, end the one process we started, by its pid.
        if not watched.ended.called:
            try:
                process.signalProcess(signal.SIGTERM)
            except Exception:
                pass
        return watched.ended

    def stunnel_log(self) -> str:
        try:
            with open(self.log_file) as handle:
                return handle.read()
        except OSError:
            return ""

    @defer.inlineCallbacks
    def test_netconf_over_stunnel(self):
        manager = Manager(self, SILENT)
        self.stunnel_device(manager, manager.paths["device.crt"], manager.paths["device.key"])
        session = yield manager.registry.whenConnected("device1.example.net")
        self.assertEqual(session.details["transport"], "netconf-tls")
        self.assertEqual(session.details["tls_direction"], "silent")
        self.assertEqual(session.details["certificate_fingerprint"], test_pki().device.fingerprint)
        decided = manager.log.named("tls.protocol.decided")[0]
        self.assertEqual((decided["protocol"], decided["decided_by"]), ("netconf", "spoke-first"))
        reply = yield session.rpc("<get-config><source><running/></source></get-config>")
        self.assertTrue(reply.tag.endswith("rpc-reply"), self.stunnel_log())
        yield session.close_session()

    @defer.inlineCallbacks
    def test_revoked_stunnel_device(self):
        manager = Manager(self, SILENT, [Device("device-revoked.example.net")])
        watched = self.stunnel_device(manager, manager.paths["revoked.crt"], manager.paths["revoked.key"])
        refused = yield manager.log.when("tls.certificate.refused")
        self.assertEqual(refused["reason"], "revoked")
        self.assertEqual(refused["fingerprint"], test_pki().revoked.fingerprint)
        yield watched.ended
        self.assertEqual(manager.registry.sessions(), [])
