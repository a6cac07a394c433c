"""The sans-IO classifier: real first bytes of every kind, split every way."""

from hypothesis import given, settings as hypothesis_settings, strategies as st
from OpenSSL import SSL
from twisted.trial import unittest

from callhome_mux.connection import ConnectionKind
from callhome_mux.demux.classifier import Classifier, parse_outbound_ssh_preamble
from callhome_mux.demux.settings import DemuxSettings
from callhome_mux.settings import ConfigError, from_table

from tests import samples


def classify(stream: bytes, sizes=None, settings=None):
    """Feed C{stream} in pieces of C{sizes} (cycled); return the decision or None."""
    classifier = Classifier(settings or DemuxSettings())
    sizes = sizes or [len(stream) or 1]
    position, index = 0, 0
    while position < len(stream):
        size = max(1, sizes[index % len(sizes)])
        decision = classifier.feed(stream[position : position + size])
        position += size
        index += 1
        if decision is not None:
            return decision, position
    return None, position


class SSHBannerTests(unittest.TestCase):
    def test_real_banners_are_ssh(self):
        for name, banner in samples.SSH_BANNERS.items():
            decision, _ = classify(banner + samples.BINARY_AFTER_BANNER)
            self.assertEqual(decision.kind, ConnectionKind.SSH, name)
            self.assertEqual(decision.data, banner + samples.BINARY_AFTER_BANNER, name)

    def test_banner_decided_at_the_prefix_one_byte_at_a_time(self):
        banner = samples.SSH_BANNERS["openssh-debian"]
        decision, consumed = classify(banner, sizes=[1])
        self.assertEqual(decision.kind, ConnectionKind.SSH)
        self.assertEqual(consumed, len(b"SSH-2.0-"))
        self.assertEqual(decision.data, b"SSH-2.0-")

    def test_incomplete_prefix_waits(self):
        for partial in (b"S", b"SS", b"SSH", b"SSH-", b"SSH-1", b"SSH-1.9", b"SSH-2.0"):
            decision, _ = classify(partial)
            self.assertIsNone(decision, partial)

    def test_ssh1_only_is_refused(self):
        decision, _ = classify(samples.GARBAGE["ssh1"])
        self.assertIsNone(decision.kind)
        self.assertIn("unsupported SSH protocol version", decision.reason)
        self.assertIn("SSH-1.5-OldServer", decision.reason)

    def test_lines_before_banner_are_kept_and_replayed(self):
        stream = b"Welcome to the lab\r\nAuthorised use only\r\n" + samples.SSH_BANNERS["cisco-ios"]
        decision, _ = classify(stream + samples.BINARY_AFTER_BANNER)
        self.assertEqual(decision.kind, ConnectionKind.SSH)
        self.assertEqual(decision.preamble_lines, ("Welcome to the lab", "Authorised use only"))
        self.assertEqual(decision.preamble, {})
        self.assertEqual(decision.data, stream + samples.BINARY_AFTER_BANNER)

    def test_juniper_preamble_claims(self):
        stream = samples.JUNIPER_PREAMBLE + samples.SSH_BANNERS["openssh-junos"] + samples.BINARY_AFTER_BANNER
        decision, _ = classify(stream)
        self.assertEqual(decision.kind, ConnectionKind.SSH)
        self.assertEqual(decision.preamble["DEVICE-ID"], "mx960-lab-1")
        self.assertEqual(decision.preamble["MSG-VER"], "V1")
        self.assertTrue(decision.preamble["HOST-KEY"].startswith("ssh-ed25519 AAAA"))
        self.assertEqual(decision.preamble["HMAC"], "3f2a1b7c9d0e4f5a6b7c8d9e0f1a2b3c4d5e6f70")
        self.assertEqual(list(decision.preamble_lines), samples.JUNIPER_PREAMBLE_LINES)

    def test_too_many_lines_refused(self):
        settings = DemuxSettings(max_preamble_lines=3)
        decision, _ = classify(b"a\r\n" * 4 + b"SSH-2.0-x\r\n", settings=settings)
        self.assertIsNone(decision.kind)
        self.assertIn("more than 3 lines", decision.reason)

    def test_too_many_preamble_bytes_refused_even_without_newline(self):
        settings = DemuxSettings(max_preamble_bytes=100)
        decision, consumed = classify(b"x" * 500, sizes=[7], settings=settings)
        self.assertIsNone(decision.kind)
        self.assertIn("exceeds 100 bytes", decision.reason)
        self.assertLessEqual(consumed, 107)

    def test_classify_bytes_bound(self):
        settings = DemuxSettings(max_classify_bytes=64, max_preamble_bytes=10000, max_preamble_lines=1000)
        decision, consumed = classify(b"line\r\n" * 100, sizes=[6], settings=settings)
        self.assertIsNone(decision.kind)
        self.assertIn("within 64 bytes", decision.reason)
        self.assertLessEqual(consumed, 64 + 6)

    def test_non_utf8_line_refused(self):
        decision, _ = classify(b"caf\xe9\r\nSSH-2.0-x\r\n")
        self.assertIsNone(decision.kind)
        self.assertIn("not UTF-8", decision.reason)


class TLSTests(unittest.TestCase):
    def test_openssl_client_hellos(self):
        for version in (None, SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            hello = samples.openssl_client_hello(max_version=version, alpn=[b"netconf", b"http/1.1"])
            self.assertEqual(hello[0], 0x16)
            decision, _ = classify(hello)
            self.assertEqual(decision.kind, ConnectionKind.TLS_CLIENT_HELLO, version)
            self.assertEqual(decision.data, hello)

    def test_client_hello_one_byte_at_a_time(self):
        hello = samples.openssl_client_hello()
        decision, consumed = classify(hello, sizes=[1])
        self.assertEqual(decision.kind, ConnectionKind.TLS_CLIENT_HELLO)
        self.assertEqual(consumed, 6)

    def test_tls_but_not_client_hello(self):
        for name in ("tls-alert", "tls-bad-version", "tls-server-hello", "sslv2"):
            decision, _ = classify(samples.GARBAGE[name])
            self.assertIsNotNone(decision, name)
            self.assertIsNone(decision.kind, name)

    def test_record_length_impossible(self):
        decision, _ = classify(b"\x16\x03\x01\xff\xff\x01")
        self.assertIsNone(decision.kind)
        self.assertIn("impossible length", decision.reason)


class SilenceAndTimeoutTests(unittest.TestCase):
    def test_silence_means_tls_device(self):
        classifier = Classifier(DemuxSettings())
        decision = classifier.silence()
        self.assertEqual(decision.kind, ConnectionKind.TLS_SILENT)
        self.assertEqual(decision.data, b"")

    def test_silence_after_bytes_is_not_a_decision(self):
        classifier = Classifier(DemuxSettings())
        self.assertIsNone(classifier.feed(b"SS"))
        self.assertIsNone(classifier.silence())
        decision = classifier.timeout()
        self.assertIsNone(decision.kind)
        self.assertIn("not classified in time (2 bytes read)", decision.reason)

    def test_feeding_after_decision_is_an_error(self):
        classifier = Classifier(DemuxSettings())
        classifier.feed(b"SSH-2.0-")
        self.assertRaises(RuntimeError, classifier.feed, b"more")


class GarbageTests(unittest.TestCase):
    def test_every_kind_of_garbage_is_refused_with_a_reason(self):
        for name, stream in samples.GARBAGE.items():
            decision, _ = classify(stream)
            if decision is None:
                # Text that could still be a preamble waits; the timer refuses it.
                classifier = Classifier(DemuxSettings())
                classifier.feed(stream)
                decision = classifier.timeout()
            self.assertIsNone(decision.kind, name)
            self.assertTrue(decision.reason, name)

    def test_http_named(self):
        decision, _ = classify(samples.GARBAGE["http"])
        self.assertIn("HTTP request", decision.reason)

    def test_unexpected_proxy_header_named(self):
        decision, _ = classify(samples.PROXY_V1 + samples.SSH_BANNERS["conch"])
        self.assertIn("PROXY protocol header", decision.reason)

    def test_binary_named(self):
        decision, _ = classify(samples.GARBAGE["binary"])
        self.assertIn("binary data", decision.reason)


class SplitPropertyTests(unittest.TestCase):
    """However a stream is split, the decision and the replayed bytes are the same."""

    streams = [
        samples.SSH_BANNERS["openssh-debian"] + samples.BINARY_AFTER_BANNER,
        b"banner text\r\n" + samples.SSH_BANNERS["dropbear"] + samples.BINARY_AFTER_BANNER,
        samples.JUNIPER_PREAMBLE + samples.SSH_BANNERS["openssh-junos"] + samples.BINARY_AFTER_BANNER,
        samples.openssl_client_hello(),
        samples.GARBAGE["binary"],
        samples.GARBAGE["ssh1"],
    ]

    @hypothesis_settings(max_examples=300, deadline=None)
    @given(index=st.integers(0, 5), sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30))
    def test_split_invariance(self, index, sizes):
        stream = self.streams[index]
        whole, _ = classify(stream)
        split, consumed = classify(stream, sizes=sizes)
        self.assertEqual(split.kind, whole.kind)
        self.assertEqual(split.preamble, whole.preamble)
        self.assertEqual(split.preamble_lines, whole.preamble_lines)
        # The decision replays exactly the bytes consumed so far, a prefix of the stream.
        self.assertEqual(split.data, stream[:consumed])


class PreambleParserTests(unittest.TestCase):
    def test_only_juniper_preambles_give_claims(self):
        self.assertEqual(parse_outbound_ssh_preamble(["DEVICE-ID: x"]), {})
        self.assertEqual(parse_outbound_ssh_preamble([]), {})
        claims = parse_outbound_ssh_preamble(["MSG-ID: DEVICE-CONN-INFO", "device-id: r1", "DEVICE-ID: r2"])
        self.assertEqual(claims["DEVICE-ID"], "r1")  # the first claim stands


class SettingsTests(unittest.TestCase):
    def test_defaults(self):
        settings = DemuxSettings()
        self.assertEqual(settings.silence_timeout, 1.0)

    def test_bad_values_name_the_key(self):
        with self.assertRaises(ConfigError) as caught:
            from_table(DemuxSettings, {"silence-timeout": -1}, "demux")
        self.assertIn("demux.silence_timeout", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            from_table(DemuxSettings, {"max_unclassified": "many"}, "demux")
        self.assertIn("demux.max_unclassified", str(caught.exception))
        self.assertIn("whole number", str(caught.exception))
