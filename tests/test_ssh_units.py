"""
Unit tests of the SSH layer's pieces: settings, algorithm offer, host-key
trust (directory, known_hosts plain and hashed), Juniper preamble, keepalive.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from twisted.conch.ssh import transport
from twisted.conch.ssh.common import NS
from twisted.internet import defer, task
from twisted.trial import unittest

from callhome_mux.inventory.model import Credentials, Device, DeviceDirectory
from callhome_mux.settings import ConfigError, from_table
from callhome_mux.ssh.algorithms import offer_for
from callhome_mux.ssh.keepalive import KeepaliveMonitor
from callhome_mux.timers import long_lived_timers, shared_timers
from callhome_mux.ssh.preamble import outbound_ssh_hmac, preamble_problem
from callhome_mux.ssh.settings import SSHSettings
from callhome_mux.ssh.trust import (
    DEVICE_DISABLED,
    HOSTKEY_MISMATCH,
    HOSTKEY_UNKNOWN,
    DirectoryTrust,
    KnownHosts,
    PresentedHostKey,
)
from callhome_mux.testing.ssh_device import generate_ed25519_key


def new_key():
    public = generate_ed25519_key().public()
    return PresentedHostKey(public.blob()), public.toString("openssh").decode()


class SettingsTests(unittest.TestCase):
    def test_defaults(self):
        settings = SSHSettings()
        self.assertEqual((settings.keepalive_interval, settings.keepalive_max_missed), (30.0, 3))
        self.assertEqual(settings.channel_window, 2 * 1024 * 1024)
        self.assertEqual(settings.key_exchanges[:2], ("mlkem768x25519-sha256", "curve25519-sha256"))
        self.assertEqual(settings.host_key_algorithms[0], "ssh-ed25519")
        self.assertIsNone(settings.default_credentials())

    def test_from_table(self):
        settings = from_table(SSHSettings, {"keepalive-interval": 5, "ciphers": ["aes128-ctr"]}, "ssh")
        self.assertEqual(settings.keepalive_interval, 5.0)
        self.assertEqual(settings.ciphers, ("aes128-ctr",))

    def test_weak_algorithms_refused(self):
        for key, name in (("macs", "hmac-md5"), ("ciphers", "3des-cbc"), ("host_key_algorithms", "ssh-dss")):
            with self.assertRaises(ConfigError) as caught:
                from_table(SSHSettings, {key: [name]}, "ssh")
            self.assertIn(f"ssh.{key}", str(caught.exception))

    def test_bad_values_named(self):
        with self.assertRaises(ConfigError) as caught:
            from_table(SSHSettings, {"keepalive_max_missed": 0}, "ssh")
        self.assertIn("ssh.keepalive_max_missed", str(caught.exception))

    def test_default_password_hidden_from_repr(self):
        settings = SSHSettings(default_password="hunter2", default_username="u")
        self.assertNotIn("hunter2", repr(settings))
        self.assertEqual(settings.default_credentials().username, "u")

    def test_offer_drops_weak_and_unsupported(self):
        offer = offer_for(SSHSettings())
        self.assertEqual(offer.host_key_algorithms[0], b"ssh-ed25519")
        self.assertIn(b"curve25519-sha256", offer.key_exchanges[:2])
        for weak in (b"diffie-hellman-group14-sha1", b"diffie-hellman-group-exchange-sha1"):
            self.assertNotIn(weak, offer.key_exchanges)
        self.assertNotIn(b"ssh-rsa", offer.host_key_algorithms)
        self.assertNotIn(b"3des-cbc", offer.ciphers)
        self.assertNotIn(b"hmac-md5", offer.macs)

    def test_offer_refuses_nothing_supported(self):
        with self.assertRaises(ValueError):
            offer_for(SSHSettings(ciphers=("chacha20-poly1305@openssh.com",)))


class DirectoryTrustTests(unittest.TestCase):
    def test_key_line_and_fingerprint_entries(self):
        key1, line1 = new_key()
        key2, _ = new_key()
        directory = DeviceDirectory([Device(id="a", ssh_host_keys=(line1,)), Device(id="b", ssh_host_keys=(key2.fingerprint,))])
        trust = DirectoryTrust(directory)
        self.assertEqual(trust(key1).device.id, "a")
        self.assertEqual(trust(key2).device.id, "b")
        self.assertEqual(trust(key1).source, "directory")

    def test_unknown(self):
        key, _ = new_key()
        verdict = DirectoryTrust(DeviceDirectory())(key)
        self.assertFalse(verdict.trusted)
        self.assertEqual(verdict.event, HOSTKEY_UNKNOWN)

    def test_claim_of_other_device(self):
        key, line = new_key()
        _, other_line = new_key()
        directory = DeviceDirectory([Device(id="a", ssh_host_keys=(line,)), Device(id="b", ssh_host_keys=(other_line,))])
        verdict = DirectoryTrust(directory)(key, "b")
        self.assertEqual(verdict.event, HOSTKEY_MISMATCH)

    def test_changed_key_for_known_device(self):
        key, _ = new_key()
        _, old_line = new_key()
        directory = DeviceDirectory([Device(id="a", ssh_host_keys=(old_line,))])
        self.assertEqual(DirectoryTrust(directory)(key, "a").event, HOSTKEY_MISMATCH)
        # Without a claim, the new key is simply unknown.
        self.assertEqual(DirectoryTrust(directory)(key).event, HOSTKEY_UNKNOWN)

    def test_disabled_device(self):
        key, line = new_key()
        directory = DeviceDirectory([Device(id="a", ssh_host_keys=(line,), enabled=False)])
        self.assertEqual(DirectoryTrust(directory)(key).event, DEVICE_DISABLED)


class KnownHostsTests(unittest.TestCase):
    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_plain_entry_names_device(self):
        key, line = new_key()
        path = self.write(f"# comment\n@cert-authority * ssh-ed25519 AAAA\nrouter-7,alias {line}\n")
        directory = DeviceDirectory([Device(id="router-7", credentials=Credentials(username="x"))])
        verdict = DirectoryTrust(directory, KnownHosts(path))(key)
        self.assertEqual(verdict.device.id, "router-7")
        self.assertEqual(verdict.device.credentials.username, "x")
        self.assertEqual(verdict.source, "known_hosts")

    def test_name_not_in_directory_is_a_device_of_that_id(self):
        key, line = new_key()
        verdict = DirectoryTrust(DeviceDirectory(), KnownHosts(self.write(f"lonely {line}\n")))(key)
        self.assertEqual(verdict.device.id, "lonely")

    def test_hashed_entry(self):
        key, line = new_key()
        salt = os.urandom(20)
        digest = hmac.new(salt, b"router-8", hashlib.sha1).digest()
        hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
        known = KnownHosts(self.write(f"{hashed} {line}\n"))
        # Found through the claimed name or a directory name.
        self.assertEqual(DirectoryTrust(DeviceDirectory(), known)(key, "router-8").device.id, "router-8")
        directory = DeviceDirectory([Device(id="router-8")])
        self.assertEqual(DirectoryTrust(directory, known)(key).device.id, "router-8")

    def test_mismatch_against_known_hosts(self):
        key, _ = new_key()
        _, old_line = new_key()
        known = KnownHosts(self.write(f"router-9 {old_line}\n"))
        self.assertEqual(DirectoryTrust(DeviceDirectory(), known)(key, "router-9").event, HOSTKEY_MISMATCH)

    def test_reread_after_edit(self):
        key, line = new_key()
        path = self.write("")
        known = KnownHosts(path)
        self.assertEqual(DirectoryTrust(DeviceDirectory(), known)(key).event, HOSTKEY_UNKNOWN)
        with open(path, "w") as handle:
            handle.write(f"added-later {line}   # trailing comment\n")
        self.assertEqual(DirectoryTrust(DeviceDirectory(), known)(key).device.id, "added-later")

    def test_missing_file_is_empty(self):
        key, _ = new_key()
        self.assertEqual(DirectoryTrust(DeviceDirectory(), KnownHosts("/nonexistent"))(key).event, HOSTKEY_UNKNOWN)


class PreambleTests(unittest.TestCase):
    def setUp(self):
        self.key, self.line = new_key()

    def test_hmac_is_hmac_sha1_hex_of_host_key_keyed_by_secret(self):
        expected = hmac.new(b"s", self.line.encode(), hashlib.sha1).hexdigest()
        self.assertEqual(outbound_ssh_hmac("s", self.line), expected)

    def test_good(self):
        preamble = {"HOST-KEY": self.line, "HMAC": outbound_ssh_hmac("s", self.line).upper()}
        self.assertIsNone(preamble_problem("s", preamble, self.key.blob))

    def test_no_secret_no_check(self):
        self.assertIsNone(preamble_problem(None, {}, self.key.blob))

    def test_bad_hmac(self):
        preamble = {"HOST-KEY": self.line, "HMAC": outbound_ssh_hmac("other", self.line)}
        self.assertIn("HMAC", preamble_problem("s", preamble, self.key.blob))

    def test_missing(self):
        self.assertIn("no HOST-KEY", preamble_problem("s", {"DEVICE-ID": "x"}, self.key.blob))

    def test_key_differs(self):
        _, other = new_key()
        preamble = {"HOST-KEY": other, "HMAC": outbound_ssh_hmac("s", other)}
        self.assertIn("differs", preamble_problem("s", preamble, self.key.blob))

    def test_reason_never_holds_secret(self):
        preamble = {"HOST-KEY": self.line, "HMAC": "00"}
        reason = preamble_problem("sup3rs3cret", preamble, self.key.blob)
        self.assertNotIn("sup3rs3cret", reason)
        self.assertNotIn(outbound_ssh_hmac("sup3rs3cret", self.line), reason)


class KeepaliveMonitorTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.probes = []
        self.lost = []
        test = self

        class Link:
            def sendKeepalive(self):
                test.probes.append(test.clock.seconds())

            def keepaliveLost(self, missed):
                test.lost.append(missed)

        self.monitor = KeepaliveMonitor(self.clock, 10, 3, Link())
        self.monitor.start()

    def test_probe_after_quiet_interval_then_lost(self):
        self.clock.advance(9.9)
        self.assertEqual(self.probes, [])
        self.clock.pump([0.1, 10, 10])
        self.assertEqual(self.probes, [10, 20, 30])
        self.assertEqual(self.lost, [])
        self.clock.advance(10)
        self.assertEqual(self.lost, [3])
        self.clock.advance(100)
        self.assertEqual(len(self.probes), 3)

    def test_traffic_resets(self):
        self.clock.advance(10)
        self.clock.advance(5)
        self.monitor.trafficSeen()
        self.assertEqual(self.monitor.missed, 0)
        self.clock.advance(5)  # timer due, but traffic was 5 s ago
        self.assertEqual(self.probes, [10])
        self.clock.advance(5)
        self.assertEqual(self.probes, [10, 25])

    def test_traffic_a_float_hair_short_of_the_interval_ago_waits_a_real_time(self):
        # Traffic at 3.6 s with a 1 s interval: at 4.6 s, 4.6 - 3.6 is
        # 0.9999999999999996, a hair short of the interval.  The timer must
        # be re-armed for a time that has not come yet: one armed for "now"
        # runs again at once, for ever on a task.Clock (advance() never
        # returns) and in a spin on a real reactor.
        clock = task.Clock()
        probes = []
        link = type("Link", (), {"sendKeepalive": lambda self: probes.append(clock.seconds())})()
        monitor = KeepaliveMonitor(clock, 1, 3, link)
        clock.advance(3.6)
        monitor.trafficSeen()
        clock.advance(1.0)
        self.assertEqual(clock.seconds(), 4.6)
        monitor()  # as the timer would, due now
        self.assertGreater(monitor._call.getTime(), clock.seconds())
        monitor.stop()

    def test_traffic_keeps_quiet(self):
        for _ in range(10):
            self.clock.advance(6)
            self.monitor.trafficSeen()
        self.assertEqual(self.probes, [])

    def test_stop(self):
        self.monitor.stop()
        self.clock.advance(100)
        self.assertEqual(self.probes, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_apart_from_the_short_timers(self):
        # A storm's setup timers, cancelled, leave nothing behind in the
        # short timers' heap while the keepalives run on (they did when the
        # keepalives shared that heap: up to one cancelled entry per session).
        short = shared_timers(self.clock)
        setups = [short.callLater(30, self.fail) for _ in range(100)]
        monitors = [KeepaliveMonitor(self.clock, 10, 3, None) for _ in range(100)]
        for monitor in monitors:
            monitor.start()
        for setup in setups:
            setup.cancel()
        self.assertEqual(short._heap, [])
        self.assertEqual(len(long_lived_timers(self.clock)), 101)


class RekeyHostKeyTests(unittest.TestCase):
    """Once the device is known, a re-key is checked against the blob kept of the identifying key."""

    def test_the_same_key_passes_another_is_refused(self):
        from callhome_mux.events import EventBus
        from callhome_mux.ssh.callhome import HostKeyRefused, SSHCallHome

        call = SSHCallHome.__new__(SSHCallHome)  # only what a re-key reads
        call.connection = type("Connection", (), {"connection_id": "c7"})()
        call.details = {"peer": "192.0.2.9:4000"}
        call.device = Device(id="r1")
        call.events = EventBus(clock=task.Clock())
        call._close_reason = None
        seen = []
        call.events.addObserver(seen.append)
        blob = generate_ed25519_key().public().blob()
        call._host_key_blob = blob
        self.successResultOf(call.verifyHostKey(blob))
        self.assertEqual(seen, [])
        self.failureResultOf(call.verifyHostKey(generate_ed25519_key().public().blob()), HostKeyRefused)
        self.assertEqual([event["event"] for event in seen], [HOSTKEY_MISMATCH])
        self.assertEqual(call._close_reason, "the host key changed during a re-key")


class PresentedHostKeyTests(unittest.TestCase):
    def test_fields_match_conch_for_each_key_type(self):
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from twisted.conch.ssh import keys

        from callhome_mux.inventory.model import ssh_fingerprint

        for private in (
            generate_ed25519_key(),
            keys.Key(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            keys.Key(ec.generate_private_key(ec.SECP256R1())),
            keys.Key(ec.generate_private_key(ec.SECP384R1())),
        ):
            public = private.public()
            key = PresentedHostKey(public.blob())
            self.assertEqual(key.algorithm, public.sshType().decode())
            self.assertEqual(key.openssh_line, public.toString("openssh").decode())
            self.assertEqual(key.fingerprint, ssh_fingerprint(public.blob()))
            self.assertEqual(key, PresentedHostKey(public.blob()))

    def test_a_blob_that_is_no_key_does_not_raise(self):
        for blob in (b"", b"\x00\x00", b"\x00\x00\x00\x04\xff\xfe\xfd\xfc", b"\xff\xff\xff\xffabc"):
            key = PresentedHostKey(blob)
            self.assertTrue(key.fingerprint.startswith("SHA256:"))
            self.assertIsInstance(key.algorithm, str)
            self.assertTrue(key.algorithm)


class ServiceAcceptTests(unittest.TestCase):
    """conch's SERVICE_ACCEPT, with the requested service let go once accepted."""

    def transport(self):
        from callhome_mux.ssh.client import CallHomeClientTransport

        t = CallHomeClientTransport(owner=None, offer=offer_for(SSHSettings()))
        t.disconnects = []
        t.sendDisconnect = lambda code, reason: t.disconnects.append((code, reason))
        t.started = []
        t.setService = t.started.append
        return t

    def test_accepted_service_started_then_not_kept(self):
        t = self.transport()
        service = type("Service", (), {"name": b"ssh-userauth"})()
        t.instance = service
        t.ssh_SERVICE_ACCEPT(NS(b"ssh-userauth"))
        self.assertEqual(t.started, [service])
        self.assertIsNone(t.instance)
        self.assertEqual(t.disconnects, [])

    def test_accept_without_a_request_refused(self):
        for earlier in ((), (b"ssh-userauth",)):
            t = self.transport()
            if earlier:  # accepted once already
                t.instance = type("Service", (), {"name": earlier[0]})()
                t.ssh_SERVICE_ACCEPT(NS(earlier[0]))
                t.started.clear()
            t.ssh_SERVICE_ACCEPT(NS(b"ssh-connection"))
            self.assertEqual(t.started, [])
            self.assertEqual(t.disconnects, [(transport.DISCONNECT_PROTOCOL_ERROR,
                                              b"received accept for service we did not request")])

    def test_accept_naming_another_service_refused_without_starting_it(self):
        """RFC 4253 §11.1: nothing is sent after our DISCONNECT (conch started the service, which sent USERAUTH_REQUEST)."""
        for payload in (NS(b"ssh-connection"), NS(b"ssh-userauth")[:-1] + b"X", b"\x00\x00", b"\x00\x00\x00\x20ssh"):
            t = self.transport()
            t.instance = type("Service", (), {"name": b"ssh-userauth"})()
            t.ssh_SERVICE_ACCEPT(payload)
            self.assertEqual(t.started, [], payload)
            self.assertEqual(t.disconnects, [(transport.DISCONNECT_PROTOCOL_ERROR,
                                              b"received accept for service we did not request")], payload)
            self.assertIsNone(t.instance)

    def test_accept_without_payload_starts_the_requested_service_as_in_conch(self):
        t = self.transport()
        service = type("Service", (), {"name": b"ssh-userauth"})()
        t.instance = service
        t.ssh_SERVICE_ACCEPT(b"")
        self.assertEqual(t.started, [service])
        self.assertEqual(t.disconnects, [])
