"""
End to end over loopback: the device is identified by its host key, then
logged in to with its own credentials only.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.ssh.hybrid_kex import HYBRID_AVAILABLE
from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.testing.ssh_device import JuniperPreamble, SSHCallHomeDevice, generate_ed25519_key
from tests.test_ssh_harness import Manager, generate_key, write_private_key


def device_entry(device: SSHCallHomeDevice, device_id: str = "r1", **credentials) -> Device:
    return Device(id=device_id, ssh_host_keys=(device.host_key_line,), credentials=Credentials(**credentials))


class HostKeyTests(unittest.TestCase):
    timeout = 60
    @defer.inlineCallbacks
    def test_known_device_gets_a_session(self):
        device = SSHCallHomeDevice(username="admin", password="pw")
        manager = yield Manager(self, [device_entry(device, username="admin", password="pw")]).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        details = session.details
        self.assertEqual(details["transport"], "netconf-ssh")
        self.assertEqual(details["device_id"], "r1")
        self.assertEqual(details["host_key_fingerprint"], device.fingerprint)
        # Post-quantum hybrid first, when cryptography has ML-KEM.
        expected_kex = "mlkem768x25519-sha256" if HYBRID_AVAILABLE else "curve25519-sha256"
        self.assertEqual(details["algorithms"]["kex"], expected_kex)
        self.assertEqual(details["algorithms"]["host_key"], "ssh-ed25519")
        self.assertEqual(details["algorithms"]["cipher_out"], "aes256-ctr")
        self.assertEqual(details["algorithms"]["mac_out"], "hmac-sha2-256")
        self.assertIn("urn:ietf:params:netconf:base:1.1", details["capabilities"])
        self.assertEqual(details["auth_method"], "password")
        self.assertTrue(details["peer"].startswith("127.0.0.1:"))
        accepted = manager.named("ssh.hostkey.accepted")[0]
        self.assertEqual((accepted["device_id"], accepted["fingerprint"]), ("r1", device.fingerprint))

    @defer.inlineCallbacks
    def test_classic_kex_when_configured(self):
        device = SSHCallHomeDevice(password="pw")
        settings = SSHSettings(key_exchanges=("curve25519-sha256",))
        manager = yield Manager(self, [device_entry(device, password="pw")], settings=settings).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        self.assertEqual(session.details["algorithms"]["kex"], "curve25519-sha256")

    @defer.inlineCallbacks
    def test_pluggable_asynchronous_trust(self):
        from callhome_mux.ssh.trust import HostKeyVerdict

        device = SSHCallHomeDevice(password="pw")
        seen = []

        def trust(key, claimed, peer):
            seen.append((key.fingerprint, claimed, peer.split(":")[0]))
            return defer.succeed(HostKeyVerdict(device=Device(id="from-policy", credentials=Credentials(password="pw"))))

        manager = yield Manager(self, [], trust=trust).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("from-policy")
        self.assertEqual(seen, [(device.fingerprint, None, "127.0.0.1")])
        self.assertEqual(session.device_id, "from-policy")

    @defer.inlineCallbacks
    def test_fingerprint_entry_identifies_device(self):
        device = SSHCallHomeDevice(password="pw")
        entry = Device(id="r1", ssh_host_keys=(device.fingerprint,), credentials=Credentials(password="pw"))
        manager = yield Manager(self, [entry]).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r1")
        self.assertEqual(session.device_id, "r1")

    @defer.inlineCallbacks
    def test_unknown_key_is_refused_and_named(self):
        known = SSHCallHomeDevice(password="pw")
        stranger = SSHCallHomeDevice(password="pw")
        manager = yield Manager(self, [device_entry(known, password="pw")]).start()
        refused = manager.whenEvent("ssh.hostkey.unknown")
        connection = yield manager.callHome(stranger)
        event = yield refused
        yield connection.lost
        self.assertEqual(event["fingerprint"], stranger.fingerprint)
        self.assertTrue(event["fingerprint"].startswith("SHA256:"))
        self.assertEqual(event["algorithm"], "ssh-ed25519")
        self.assertEqual(event["host_key"], stranger.host_key_line)
        self.assertTrue(event["peer"].startswith("127.0.0.1:"))
        # No trust on first use: nothing was logged in to, nothing registered.
        self.assertEqual(stranger.offered_credentials, [])
        self.assertEqual(len(manager.registry), 0)

    @defer.inlineCallbacks
    def test_changed_key_for_claimed_device_is_a_mismatch(self):
        original = SSHCallHomeDevice(password="pw")
        # Same device id claimed in the preamble, but a new host key.
        impostor = SSHCallHomeDevice(password="pw", preamble=JuniperPreamble(device_id="r1"))
        manager = yield Manager(self, [device_entry(original, password="pw")]).start()
        mismatch = manager.whenEvent("ssh.hostkey.mismatch")
        connection = yield manager.callHome(impostor)
        event = yield mismatch
        yield connection.lost
        self.assertEqual(event["claimed_device_id"], "r1")
        self.assertEqual(event["fingerprint"], impostor.fingerprint)
        self.assertEqual(impostor.offered_credentials, [])

    @defer.inlineCallbacks
    def test_key_of_another_device_than_claimed_is_a_mismatch(self):
        r1 = SSHCallHomeDevice(password="pw1", preamble=JuniperPreamble(device_id="r2"))
        r2 = SSHCallHomeDevice(password="pw2")
        manager = yield Manager(
            self, [device_entry(r1, "r1", password="pw1"), device_entry(r2, "r2", password="pw2")]
        ).start()
        mismatch = manager.whenEvent("ssh.hostkey.mismatch")
        connection = yield manager.callHome(r1)
        event = yield mismatch
        yield connection.lost
        self.assertIn("'r1'", event["reason"])
        self.assertEqual(r1.offered_credentials, [])

    @defer.inlineCallbacks
    def test_known_hosts_file_names_the_device(self):
        device = SSHCallHomeDevice(password="pw")
        known_hosts = self.mktemp()
        with open(known_hosts, "w") as handle:
            handle.write(f"r9 {device.host_key_line}\n")
        settings = SSHSettings(known_hosts=known_hosts, default_username="netconf", default_password="pw")
        manager = yield Manager(self, [], settings=settings).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected("r9")
        self.assertEqual(session.details["host_key_fingerprint"], device.fingerprint)


class AuthenticationTests(unittest.TestCase):
    timeout = 60
    @defer.inlineCallbacks
    def connect(self, device, entry, settings=None):
        manager = yield Manager(self, [entry], settings=settings).start()
        yield manager.callHome(device)
        session = yield manager.registry.whenConnected(entry.id)
        return manager, session

    @defer.inlineCallbacks
    def check_public_key(self, kind):
        user_key = generate_key(kind)
        device = SSHCallHomeDevice(username="ops", authorized_keys=[user_key.public()])
        path = write_private_key(self, user_key)
        manager, session = yield self.connect(device, device_entry(device, username="ops", private_key_file=path))
        self.assertEqual(session.details["auth_method"], "publickey")
        self.assertEqual([c[0] for c in device.offered_credentials], ["publickey"])

    def test_public_key_ed25519(self):
        return self.check_public_key("ed25519")

    def test_public_key_ecdsa(self):
        return self.check_public_key("ecdsa")

    def test_public_key_rsa(self):
        return self.check_public_key("rsa")

    @defer.inlineCallbacks
    def test_encrypted_private_key(self):
        user_key = generate_key("ed25519")
        device = SSHCallHomeDevice(authorized_keys=[user_key.public()])
        path = write_private_key(self, user_key, passphrase=b"sesame")
        entry = device_entry(device, private_key_file=path, private_key_passphrase="sesame")
        manager, session = yield self.connect(device, entry)
        self.assertEqual(session.details["auth_method"], "publickey")

    @defer.inlineCallbacks
    def test_password(self):
        device = SSHCallHomeDevice(password="s3cret", auth_methods=["password"])
        manager, session = yield self.connect(device, device_entry(device, password="s3cret"))
        self.assertEqual(session.details["auth_method"], "password")

    @defer.inlineCallbacks
    def test_keyboard_interactive(self):
        device = SSHCallHomeDevice(password="s3cret", auth_methods=["keyboard-interactive"])
        manager, session = yield self.connect(device, device_entry(device, password="s3cret"))
        self.assertEqual(session.details["auth_method"], "keyboard-interactive")
        self.assertEqual(device.offered_credentials, [("keyboard-interactive", "netconf", "s3cret")])

    @defer.inlineCallbacks
    def test_default_credentials_for_device_without_any(self):
        device = SSHCallHomeDevice(username="fallback", password="dflt")
        entry = Device(id="r1", ssh_host_keys=(device.host_key_line,))
        settings = SSHSettings(default_username="fallback", default_password="dflt")
        manager, session = yield self.connect(device, entry, settings)
        self.assertEqual(session.details["username"], "fallback")

    @defer.inlineCallbacks
    def test_wrong_password_is_reported_once_and_closed(self):
        device = SSHCallHomeDevice(password="right")
        manager = yield Manager(self, [device_entry(device, password="wrong")]).start()
        failed = manager.whenEvent("ssh.auth.failed")
        connection = yield manager.callHome(device)
        event = yield failed
        yield connection.lost
        self.assertEqual(event["device_id"], "r1")
        self.assertEqual(event["methods_tried"], ["password", "keyboard-interactive"])
        self.assertIn("refused", event["reason"])
        self.assertNotIn("wrong", repr(event))
        # Each method once: no retry loop.
        self.assertEqual(device.offered_passwords, ["wrong", "wrong"])
        self.assertEqual(len(manager.named("ssh.auth.failed")), 1)
        self.assertEqual(len(manager.registry), 0)

    @defer.inlineCallbacks
    def test_no_usable_credential_is_reported(self):
        device = SSHCallHomeDevice(authorized_keys=[generate_key("ed25519").public()])
        manager = yield Manager(self, [device_entry(device, password="pw")]).start()
        failed = manager.whenEvent("ssh.auth.failed")
        connection = yield manager.callHome(device)
        event = yield failed
        yield connection.lost
        self.assertEqual(event["methods_tried"], [])
        self.assertEqual(event["methods_offered"], ["publickey"])

    @defer.inlineCallbacks
    def test_unreadable_private_key_is_reported(self):
        device = SSHCallHomeDevice(authorized_keys=[generate_key("ed25519").public()])
        entry = device_entry(device, private_key_file="/nonexistent/key")
        manager = yield Manager(self, [entry]).start()
        failed = manager.whenEvent("ssh.auth.failed")
        connection = yield manager.callHome(device)
        event = yield failed
        yield connection.lost
        self.assertIn("/nonexistent/key", event["reason"])

    @defer.inlineCallbacks
    def test_never_offers_one_devices_password_to_another(self):
        # RFC 8071 C7: B's host key identifies B, so only B's password is
        # offered to B, even though B refuses it and A's would work there.
        device_a = SSHCallHomeDevice(password="password-of-a")
        device_b = SSHCallHomeDevice(password="password-of-a")
        manager = yield Manager(
            self,
            [device_entry(device_a, "A", password="password-of-a"), device_entry(device_b, "B", password="password-of-b")],
        ).start()
        yield manager.callHome(device_a)
        yield manager.registry.whenConnected("A")
        failed = manager.whenEvent("ssh.auth.failed", device_id="B")
        connection = yield manager.callHome(device_b)
        yield failed
        yield connection.lost
        self.assertEqual(set(device_b.offered_passwords), {"password-of-b"})
        self.assertEqual(set(device_a.offered_passwords), {"password-of-a"})
        self.assertIsNone(manager.registry.get("B"))

    @defer.inlineCallbacks
    def test_secrets_never_in_events(self):
        device = SSHCallHomeDevice(password="topsecret-pw")
        manager, session = yield self.connect(device, device_entry(device, password="topsecret-pw"))
        self.assertNotIn("topsecret-pw", repr(manager.events))
        self.assertNotIn("topsecret-pw", repr(session.details))
