"""
The device's <hello>: a hello equal to one read before, but for the
session-id digits, is taken without an XML parse; anything else is parsed.
"""

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf import hello as hello_templates
from callhome_mux.netconf import session as session_module
from callhome_mux.netconf.framing import encode_eom
from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1
from callhome_mux.netconf.session import NetconfClientProtocol, hello_message

CAPABILITIES = (BASE_1_0, BASE_1_1, "urn:example:yang:a?module=a&revision=2024-01-01", "urn:example:b")


class HelloTemplateTests(TestCase):
    def setUp(self):
        hello_templates.forget_all()
        self.addCleanup(hello_templates.forget_all)
        self.parsed = []
        original = session_module.xmlsafe.parse

        def counting_parse(data, *args, **kwargs):
            self.parsed.append(data)
            return original(data, *args, **kwargs)

        self.patch(session_module.xmlsafe, "parse", counting_parse)

    def client_receiving(self, message: bytes):
        """A fresh client protocol fed C{message} as the device's hello; returns it."""
        clock = task.Clock()
        self.events = []
        bus = EventBus(clock=clock)
        bus.addObserver(self.events.append)
        client = NetconfClientProtocol(bus, clock=clock, device_id="dev", connection_id="c")
        client.makeConnection(StringTransport())
        client.dataReceived(encode_eom(message))
        return client

    def test_a_second_device_of_the_same_model_is_not_parsed(self):
        first = self.client_receiving(hello_message(CAPABILITIES, 41))
        second = self.client_receiving(hello_message(CAPABILITIES, 4294967295))
        self.assertEqual(len(self.parsed), 1)
        self.assertEqual(second.state, "ready")
        self.assertEqual(second.session.session_id, 4294967295)
        self.assertEqual(second.session.base, "1.1")
        self.assertIs(second.session.capabilities, first.session.capabilities)
        self.assertTrue(second.session.has_capability("urn:example:yang:a"))
        self.assertEqual(second.details["capability_count"], 4)

    def test_other_capabilities_are_parsed(self):
        self.client_receiving(hello_message(CAPABILITIES, 41))
        other = self.client_receiving(hello_message(CAPABILITIES[:2], 42))
        self.assertEqual(len(self.parsed), 2)
        self.assertEqual(other.session.capabilities, frozenset(CAPABILITIES[:2]))

    def test_an_invalid_session_id_in_a_known_hello_is_refused(self):
        self.client_receiving(hello_message(CAPABILITIES, 41))
        for bad in (0, 4294967296):
            client = self.client_receiving(hello_message(CAPABILITIES, bad))
            self.assertTrue(client.transport.disconnecting)
            self.assertIsNone(client.session)
            [error] = [e for e in self.events if e["event"] == "netconf.protocol.error"]
            self.assertIn("session-id", error["reason"])

    def test_a_broken_variant_of_a_known_hello_is_parsed_and_refused(self):
        good = hello_message(CAPABILITIES, 41)
        self.client_receiving(good)
        broken = good.replace(b"</hello>", b"</hell>")
        client = self.client_receiving(broken)
        self.assertEqual(len(self.parsed), 2)
        self.assertIsNone(client.session)
        [error] = [e for e in self.events if e["event"] == "netconf.protocol.error"]
        self.assertTrue(error["fatal"])

    def test_a_hello_naming_session_id_elsewhere_never_becomes_a_template(self):
        tricky = hello_message(CAPABILITIES, 41).replace(b"<capabilities>", b"<capabilities><!-- session-id -->")
        for _ in range(2):
            client = self.client_receiving(tricky)
            self.assertEqual(client.session.session_id, 41)
        self.assertEqual(len(self.parsed), 2)

    def test_a_session_id_with_spaces_is_read_but_never_a_template(self):
        spaced = hello_message(CAPABILITIES, 41).replace(b">41<", b"> 41 <")
        for _ in range(2):
            client = self.client_receiving(spaced)
            self.assertEqual(client.session.session_id, 41)
        self.assertEqual(len(self.parsed), 2)


class TemplateBoundsTests(TestCase):
    def setUp(self):
        hello_templates.forget_all()
        self.addCleanup(hello_templates.forget_all)

    def test_templates_are_bounded_in_number_and_bytes(self):
        for n in range(hello_templates.MAX_TEMPLATES + 10):
            hello_templates.remember(hello_message(CAPABILITIES + (f"urn:example:{n}",), 5), 5, n)
            self.assertLessEqual(len(hello_templates._templates), hello_templates.MAX_TEMPLATES)
        big = hello_message(CAPABILITIES + tuple(f"urn:example:big:{n}:{'x' * 200}" for n in range(1000)), 5)
        self.assertLess(len(big), hello_templates.MAX_TEMPLATE_SIZE)
        for n in range(2 * hello_templates.MAX_TEMPLATE_BYTES // len(big)):
            hello_templates.remember(big.replace(b"urn:example:big:0:", b"urn:example:big:%d:" % n), 5, n)
            self.assertLessEqual(hello_templates._template_bytes, hello_templates.MAX_TEMPLATE_BYTES)
        too_big = hello_message(CAPABILITIES + ("urn:x:" + "y" * hello_templates.MAX_TEMPLATE_SIZE,), 5)
        hello_templates.remember(too_big, 5, "too big")
        self.assertIsNone(hello_templates.known(too_big))


class TemplateLookupTests(TestCase):
    """known() finds templates by length and prefix/suffix, with the same answers as splitting the hello."""

    def setUp(self):
        hello_templates.forget_all()
        self.addCleanup(hello_templates.forget_all)

    def reference(self, message):
        # What known() answered before the length index: split, then look up.
        split = hello_templates._split(message)
        if split is None or len(message) > hello_templates.MAX_TEMPLATE_SIZE:
            return None
        value = hello_templates._templates.get(split[0])
        return None if value is None else (split[1], value)

    def variants(self, models):
        for model in models:
            for session_id in (1, 9, 10, 99, 12345, 4294967295, 9999999999, 10000000000, 0):
                message = hello_message(model, session_id)
                yield message
                yield message.replace(b"</session-id>", b"</session-idx>")
                yield message.replace(b"<session-id>", b"<session-id>x")
                yield message.replace(b"<session-id>%d" % session_id, b"<session-id>%d " % session_id)
                yield message.replace(b"<session-id>%d" % session_id, b"<session-id>+%d" % session_id)
                yield message[:-1]
                yield b" " + message
                yield message.replace(b"<hello", b"<hellp", 1)
            yield hello_message(model, 5).replace(b">5<", "\u0665".encode())  # a non-ASCII digit

    def check(self, models, remembered):
        for n, model in enumerate(remembered):
            hello_templates.remember(hello_message(model, 7), 7, ("value", n))
        checked = 0
        for message in self.variants(models):
            self.assertEqual(hello_templates.known(message), self.reference(message), message[-80:])
            checked += 1
        self.assertGreater(checked, 100)

    def test_the_same_answers_as_splitting_with_few_templates(self):
        models = [CAPABILITIES, CAPABILITIES[:2], CAPABILITIES + ("urn:example:c",), CAPABILITIES[:3]]
        self.check(models + [CAPABILITIES[:1]], models)

    def test_the_same_answers_as_splitting_with_many_templates_of_near_lengths(self):
        # Capability names one byte longer each: templates whose lengths
        # differ by as much as session-ids' digit counts do.
        models = [CAPABILITIES + ("urn:example:" + "x" * n,) for n in range(30)]
        self.check(models, models[::2])

    def test_known_does_not_scan_the_hello(self):
        hello_templates.remember(hello_message(CAPABILITIES, 7), 7, "value")

        def no_split(message):
            raise AssertionError("known() split the hello")

        self.patch(hello_templates, "_split", no_split)
        self.assertEqual(hello_templates.known(hello_message(CAPABILITIES, 123456)), (123456, "value"))
        self.assertIsNone(hello_templates.known(hello_message(CAPABILITIES[:2], 5)))

    def test_forgetting_forgets_the_index_too(self):
        hello_templates.remember(hello_message(CAPABILITIES, 7), 7, "value")
        hello_templates.forget_all()
        self.assertIsNone(hello_templates.known(hello_message(CAPABILITIES, 7)))
        self.assertEqual(hello_templates._by_length, {})
