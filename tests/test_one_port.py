"""
Every kind of call home on ONE automatic port at once: NETCONF over SSH,
NETCONF over TLS and RESTCONF over TLS, each TLS kind in both directions,
through the real service with its default handlers.
"""

import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from callhome_mux.config import config_from_document
from callhome_mux.service import CallHomeService
from callhome_mux.testing.certs import test_pki
from callhome_mux.testing.restconf_device import RestconfDevice
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from callhome_mux.testing.tls_device import TLSCallHomeDevice

from tests.helpers import EventLog

TLS_DEVICES = {
    # device id: (protocol, direction)
    "nc-silent.example.net": ("netconf", "silent"),
    "nc-hello.example.net": ("netconf", "client-hello"),
    "rc-silent.example.net": ("restconf", "silent"),
    "rc-hello.example.net": ("restconf", "client-hello"),
}


class OnePortTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        pki = test_pki()
        certificates = os.path.abspath(self.mktemp())
        paths = pki.write(certificates)
        self.ssh_device = SSHCallHomeDevice(username="admin", password="pw")
        self.tls_devices = {}
        for device_id, (protocol, direction) in TLS_DEVICES.items():
            issued = pki.device_certificate(device_id.split(".")[0])
            if protocol == "netconf":
                device = TLSCallHomeDevice(issued.chain_pem, issued.key_pem, [pki.ca.certificate])
            else:
                device = RestconfDevice().over_tls(issued.chain_pem, issued.key_pem, [pki.ca.certificate])
            self.addCleanup(device.disconnect)
            self.tls_devices[device_id] = device
        document = {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "state_dir": self.mktemp(),
            "tls": {
                "certificate_file": paths["manager.crt"],
                "private_key_file": paths["manager.key"],
                "trust_anchor_files": [paths["ca.crt"]],
                "cert_to_name": [{"fingerprint": pki.ca.fingerprint, "map_type": "san-dns-name"}],
            },
            "devices": [
                {
                    "id": "r-ssh",
                    "ssh_host_keys": [self.ssh_device.host_key_line],
                    "credentials": {"username": "admin", "password": "pw"},
                }
            ]
            + [{"id": device_id} for device_id in TLS_DEVICES],
        }
        self.service = CallHomeService(config_from_document(document))
        self.log = EventLog(self.service.events)
        # The demultiplexer's timers on a clock the test moves: silent
        # devices are classified exactly when the test says so.
        self.demux_clock = task.Clock()
        self.service.listeners[0].demux.clock = self.demux_clock
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.whenStarted()
        self.port = self.service.listeners[0].port.getHost().port

    @defer.inlineCallbacks
    def test_every_kind_at_once(self):
        registry = self.service.registry
        waiting = {device_id: registry.whenConnected(device_id) for device_id in ["r-ssh", *TLS_DEVICES]}
        self.ssh_device.callHome(reactor, "127.0.0.1", self.port)
        for device_id, device in self.tls_devices.items():
            device.callHome(reactor, "127.0.0.1", self.port, TLS_DEVICES[device_id][1])

        # Devices that talk first are classified by their bytes ...
        talkers = yield defer.gatherResults([waiting[i] for i in ("r-ssh", "nc-hello.example.net", "rc-hello.example.net")])
        self.assertEqual(len(self.service.admission), 2)  # the two silent ones still wait
        # ... and the silent ones when the silence timer fires.
        self.demux_clock.advance(self.service.config.demux.silence_timeout)
        silent = yield defer.gatherResults([waiting[i] for i in ("nc-silent.example.net", "rc-silent.example.net")])
        sessions = dict(zip(["r-ssh", "nc-hello.example.net", "rc-hello.example.net"], talkers))
        sessions.update(zip(["nc-silent.example.net", "rc-silent.example.net"], silent))

        kinds = sorted(event["kind"] for event in self.log.named("connection.classified"))
        self.assertEqual(kinds, ["ssh", "tls-clienthello", "tls-clienthello", "tls-silent", "tls-silent"])
        self.assertEqual(sessions["r-ssh"].details["transport"], "netconf-ssh")
        for device_id, (protocol, direction) in TLS_DEVICES.items():
            details = sessions[device_id].details
            self.assertEqual(details["transport"], "netconf-tls" if protocol == "netconf" else "restconf", device_id)
            self.assertEqual(details["tls_direction"], direction, device_id)

        # Each session works, over the one connection its device opened.
        for device_id in ("r-ssh", "nc-silent.example.net", "nc-hello.example.net"):
            data = yield sessions[device_id].get_config(source="running")
            self.assertTrue(data.tag.endswith("}data"), device_id)
        for device_id in ("rc-silent.example.net", "rc-hello.example.net"):
            reply = yield sessions[device_id].get("ietf-system:system")
            self.assertEqual(reply.status, 200, device_id)
            self.assertIn("ietf-system:system", reply.data)
        self.assertEqual(len(self.service.sessions()), 5)
        self.assertEqual(self.log.named("connection.rejected"), [])
