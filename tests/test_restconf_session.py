"""
The RESTCONF client against the simulated device over real loopback TCP,
in the call-home shape: we listen, the device dials, we run the client on
the accepted connection.  Timers run on a task.Clock; nothing sleeps.
"""

from lxml import etree
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from callhome_mux.events import EventBus
from callhome_mux.restconf.errors import RequestTimeout, ResponseTooLarge, RestconfError, SessionLost
from callhome_mux.restconf.query import list_instance
from callhome_mux.restconf.session import restconf_protocol
from callhome_mux.restconf.settings import RestconfSettings
from callhome_mux.testing.restconf_device import RestconfDevice

IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
OPS_NS = "urn:example:ops"


class _Listener(Factory):
    """Our side: builds the RESTCONF client for the connection the device opens."""

    noisy = False

    def __init__(self, case):
        self.case = case
        self.built = defer.Deferred()

    def buildProtocol(self, addr):
        protocol = restconf_protocol(
            "device-1", self.case.events, self.case.settings, {"peer": f"{addr.host}:{addr.port}"}, self.case.clock
        )
        self.built.callback(protocol)
        return protocol


class DeviceCase(unittest.TestCase):
    settings = RestconfSettings()
    device_options = {}

    def setUp(self):
        self.clock = task.Clock()
        self.events = EventBus(clock=self.clock)
        self.seen = []
        self.events.addObserver(self.seen.append)
        self.device = RestconfDevice(**self.device_options)
        self.listener = _Listener(self)
        self.port = reactor.listenTCP(0, self.listener, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def call_home(self):
        yield self.device.call_home(reactor, "127.0.0.1", self.port.getHost().port)
        self.protocol = yield self.listener.built
        self.addCleanup(self._close)
        session = yield self.protocol.whenReady()
        return session

    @defer.inlineCallbacks
    def _close(self):
        lost = self.protocol.whenLost()
        self.protocol.close("test over")
        yield lost
        yield self.device.whenAllLost()

    def event(self, name):
        return [e for e in self.seen if e["event"] == name]


class DiscoveryTests(DeviceCase):
    device_options = {"root": "/top/restconf", "content_id": "abc"}

    @defer.inlineCallbacks
    def test_root_and_yang_library(self):
        session = yield self.call_home()
        self.assertEqual(session.root, "/top/restconf")
        self.assertEqual(session.device_id, "device-1")
        self.assertEqual(session.yang_library.source, "yang-library")
        self.assertEqual(session.yang_library.namespace("ietf-interfaces"), IF_NS)
        self.assertEqual(
            {k: session.details[k] for k in ("transport", "module_count", "content_id", "root")},
            {"transport": "restconf", "module_count": 5, "content_id": "abc", "root": "/top/restconf"},
        )
        self.assertEqual([(r.method, r.uri) for r in self.device.requests], [
            ("GET", "/.well-known/host-meta"),
            ("GET", "/top/restconf/data/ietf-yang-library:yang-library"),
        ])
        self.assertEqual(len(self.event("restconf.session.ready")), 1)


class ModulesStateTests(DeviceCase):
    device_options = {"yang_library": "modules-state", "content_id": "legacy-7"}

    @defer.inlineCallbacks
    def test_falls_back_to_modules_state(self):
        session = yield self.call_home()
        self.assertEqual(session.yang_library.source, "modules-state")
        self.assertEqual(session.details["content_id"], "legacy-7")
        self.assertEqual(session.details["module_count"], 5)


class XMLDiscoveryTests(DeviceCase):
    settings = RestconfSettings(default_encoding="xml")

    @defer.inlineCallbacks
    def test_yang_library_in_xml(self):
        session = yield self.call_home()
        self.assertEqual(session.details["module_count"], 5)
        reply = yield session.get("example-system:system")
        self.assertEqual(reply.data.findtext("{urn:example:system}hostname"), "device-1")


class JSONHelperTests(DeviceCase):
    @defer.inlineCallbacks
    def test_get_with_query_parameters(self):
        session = yield self.call_home()
        reply = yield session.get("ietf-interfaces:interfaces/" + list_instance("interface", "eth0"))
        entry = reply.data["ietf-interfaces:interface"][0]
        self.assertEqual((entry["name"], entry["oper-status"]), ("eth0", "up"))
        config = yield session.get("ietf-interfaces:interfaces/interface=eth0", content="config")
        self.assertNotIn("oper-status", config.data["ietf-interfaces:interface"][0])
        state = yield session.get("ietf-interfaces:interfaces/interface=eth0", content="nonconfig")
        self.assertEqual(set(state.data["ietf-interfaces:interface"][0]), {"name", "oper-status", "statistics"})
        shallow = yield session.get("example-system:system", depth=1)
        self.assertEqual(shallow.data, {"example-system:system": {}})
        picked = yield session.get("example-system:system", fields=["hostname", "clock/timezone"])
        self.assertEqual(picked.data, {"example-system:system": {"hostname": "device-1", "clock": {"timezone": "UTC"}}})
        nested = yield session.get("ietf-interfaces:interfaces", fields="interface(name;statistics/in-octets)")
        self.assertEqual(
            nested.data["ietf-interfaces:interfaces"]["interface"][0], {"name": "eth0", "statistics": {"in-octets": 1000}}
        )
        defaults = yield session.get("example-system:system", with_defaults="report-all")
        self.assertEqual(defaults.data["example-system:system"]["contact"], "noc@example.net")
        self.assertEqual(reply.content_type, "application/yang-data+json")

    @defer.inlineCallbacks
    def test_put_post_patch_delete(self):
        session = yield self.call_home()
        created = yield session.put(
            "ietf-interfaces:interfaces/interface=eth2", {"ietf-interfaces:interface": [{"name": "eth2", "enabled": True}]}
        )
        self.assertEqual(created.status, 201)
        replaced = yield session.put("example-system:system/hostname", {"example-system:hostname": "core-1"})
        self.assertEqual(replaced.status, 204)
        posted = yield session.post("ietf-interfaces:interfaces", {"ietf-interfaces:interface": [{"name": "eth3"}]})
        self.assertEqual(posted.status, 201)
        self.assertTrue(posted.location.endswith("/data/ietf-interfaces:interfaces/ietf-interfaces:interface=eth3"))
        patched = yield session.patch("example-system:system", {"example-system:system": {"contact": "ops@example.net"}})
        self.assertEqual(patched.status, 204)
        deleted = yield session.delete("ietf-interfaces:interfaces/interface=eth1")
        self.assertEqual(deleted.status, 204)
        names = [i["name"] for i in self.device.data["ietf-interfaces:interfaces"]["interface"]]
        self.assertEqual(names, ["eth0", "eth2", "eth3"])
        system = self.device.data["example-system:system"]
        self.assertEqual((system["hostname"], system["contact"], system["clock"]["timezone"]), ("core-1", "ops@example.net", "UTC"))

    @defer.inlineCallbacks
    def test_operation_and_action(self):
        session = yield self.call_home()
        output = yield session.invoke("example-ops:reboot", {"delay": 5})
        self.assertEqual(output.data, {"example-ops:output": {"message": "rebooting in 5 seconds"}})
        wrapped = yield session.invoke("example-ops:reboot", {"example-ops:input": {"delay": 1}})
        self.assertEqual(wrapped.data["example-ops:output"]["message"], "rebooting in 1 seconds")
        nothing = yield session.invoke("example-ops:noop")
        self.assertEqual((nothing.status, nothing.data), (204, None))
        action = yield session.invoke("ietf-interfaces:interfaces/interface=eth0/example-ops:reset")
        self.assertEqual(action.data, {"example-ops:output": {"reset-at": "2026-01-01T00:00:00Z"}})
        self.assertEqual(self.device.data["ietf-interfaces:interfaces"]["interface"][0]["statistics"]["in-octets"], 0)


class XMLHelperTests(DeviceCase):
    @defer.inlineCallbacks
    def test_get(self):
        session = yield self.call_home()
        reply = yield session.get("ietf-interfaces:interfaces/interface=eth0", encoding="xml", content="config")
        self.assertEqual(reply.content_type, "application/yang-data+xml")
        self.assertEqual(reply.data.tag, f"{{{IF_NS}}}interface")
        self.assertEqual(reply.data.findtext(f"{{{IF_NS}}}description"), "uplink")
        self.assertIsNone(reply.data.find(f"{{{IF_NS}}}oper-status"))
        whole = yield session.get("", encoding="xml", depth=1)
        self.assertEqual(whole.data.tag, "{urn:ietf:params:xml:ns:yang:ietf-restconf}data")

    @defer.inlineCallbacks
    def test_put_post_patch_delete(self):
        session = yield self.call_home()
        entry = etree.fromstring(f'<interface xmlns="{IF_NS}"><name>eth9</name><enabled>false</enabled></interface>')
        created = yield session.put("ietf-interfaces:interfaces/interface=eth9", entry, encoding="xml")
        self.assertEqual(created.status, 201)
        posted = yield session.post(
            "ietf-interfaces:interfaces",
            f'<interface xmlns="{IF_NS}"><name>eth8</name></interface>'.encode(),
            encoding="xml",
        )
        self.assertEqual(posted.status, 201)
        patch = etree.fromstring('<system xmlns="urn:example:system"><hostname>edge-9</hostname></system>')
        yield session.patch("example-system:system", patch, encoding="xml")
        yield session.delete("ietf-interfaces:interfaces/interface=eth0")
        interfaces = self.device.data["ietf-interfaces:interfaces"]["interface"]
        self.assertEqual([i["name"] for i in interfaces], ["eth1", "eth9", "eth8"])
        self.assertIs(interfaces[1]["enabled"], False)
        self.assertEqual(self.device.data["example-system:system"]["hostname"], "edge-9")
        self.assertEqual(self.device.data["example-system:system"]["contact"], "noc@example.net")

    @defer.inlineCallbacks
    def test_operation_and_action(self):
        session = yield self.call_home()
        request = etree.fromstring(f'<input xmlns="{OPS_NS}"><delay>2</delay></input>')
        output = yield session.invoke("example-ops:reboot", request, encoding="xml")
        self.assertEqual(output.data.tag, f"{{{OPS_NS}}}output")
        self.assertEqual(output.data.findtext(f"{{{OPS_NS}}}message"), "rebooting in 2 seconds")
        from_dict = yield session.invoke("example-ops:reboot", {"delay": 7}, encoding="xml")
        self.assertEqual(from_dict.data.findtext(f"{{{OPS_NS}}}message"), "rebooting in 7 seconds")
        action = yield session.invoke("ietf-interfaces:interfaces/interface=eth1/example-ops:reset", encoding="xml")
        self.assertEqual(action.data.findtext(f"{{{OPS_NS}}}reset-at"), "2026-01-01T00:00:00Z")


class ErrorReplyTests(DeviceCase):
    @defer.inlineCallbacks
    def assertRestconfError(self, d, status, tag):
        try:
            yield d
        except RestconfError as error:
            self.assertEqual(error.status, status)
            self.assertEqual(error.error_tags[0], tag)
            return error
        self.fail(f"expected a RestconfError {status} {tag}")

    @defer.inlineCallbacks
    def test_errors_in_both_encodings(self):
        session = yield self.call_home()
        for encoding in ("json", "xml"):
            missing = yield self.assertRestconfError(
                session.get("ietf-interfaces:interfaces/interface=nope", encoding=encoding), 404, "data-missing"
            )
            self.assertEqual(missing.errors[0].error_path, "/ietf-interfaces:interfaces/interface=nope")
            self.assertEqual(missing.errors[0].error_type, "protocol")
            yield self.assertRestconfError(session.invoke("example-ops:nonexistent", encoding=encoding), 404, "invalid-value")
            gone = yield self.assertRestconfError(
                session.delete("example-system:system/location", encoding=encoding), 404, "data-missing"
            )
            self.assertEqual(gone.body[:1], b"<" if encoding == "xml" else b"{")
        exists = yield self.assertRestconfError(
            session.post("ietf-interfaces:interfaces", {"ietf-interfaces:interface": [{"name": "eth0"}]}), 409, "data-exists"
        )
        self.assertIn("already exists", exists.errors[0].error_message)
        yield self.assertRestconfError(session.put("example-system:system", b"{not json"), 400, "malformed-message")
        yield self.assertRestconfError(
            session.put("example-system:system", b"<system xmlns='urn:example:system'>", encoding="xml"), 400, "malformed-message"
        )

    @defer.inlineCallbacks
    def test_every_field_of_every_error(self):
        session = yield self.call_home()
        for encoding, expected_info in (("json", {"example-ops:bad-value": "99"}), ("xml", "99")):
            error = yield self.assertRestconfError(
                session.invoke("example-ops:fail", None, encoding=encoding), 400, "invalid-value"
            )
            self.assertEqual(len(error.errors), 2)
            first, second = error.errors
            self.assertEqual(
                (first.error_type, first.error_tag, first.error_app_tag, first.error_path, first.error_message),
                ("application", "invalid-value", "example-ops:range", "/example-ops:fail/input/delay", "delay is out of range"),
            )
            info = first.error_info if encoding == "json" else first.error_info.findtext(f"{{{OPS_NS}}}bad-value")
            self.assertEqual(info, expected_info)
            self.assertEqual((second.error_tag, second.error_app_tag, second.error_info), ("missing-element", None, None))
            self.assertEqual(error.path, session.root + "/operations/example-ops:fail")


class OneConnectionTests(DeviceCase):
    @defer.inlineCallbacks
    def test_requests_in_order_on_one_connection(self):
        session = yield self.call_home()
        ds = []
        for n in range(20):
            ds.append(session.put("example-system:system/hostname", {"example-system:hostname": f"h{n}"}))
            ds.append(session.get("example-system:system", fields="hostname"))
        replies = yield defer.gatherResults(ds)
        hostnames = [r.data["example-system:system"]["hostname"] for r in replies[1::2]]
        # Each GET saw the PUT queued just before it: strict order on the wire.
        self.assertEqual(hostnames, [f"h{n}" for n in range(20)])
        self.assertEqual(self.device.connection_count, 1)
        self.assertEqual({r.connection for r in self.device.requests}, {1})
        self.assertEqual(len(self.device.requests), 2 + 40)


class BodyLimitTests(DeviceCase):
    settings = RestconfSettings(max_response_body=2048)

    @defer.inlineCallbacks
    def test_large_reply_fails_alone(self):
        session = yield self.call_home()
        self.device.data["example-system:system"]["contact"] = "x" * 10000
        big = session.get("example-system:system")
        small = session.get("example-system:system/hostname")
        yield self.assertFailure(big, ResponseTooLarge)
        reply = yield small
        self.assertEqual(reply.data, {"example-system:hostname": "device-1"})
        self.assertEqual(self.device.connection_count, 1)


class TimeoutAndLossTests(DeviceCase):
    settings = RestconfSettings(request_timeout=5)

    @defer.inlineCallbacks
    def test_timeout_fails_request_and_ends_session(self):
        session = yield self.call_home()
        lost = session.whenLost()
        self.device.hold()
        d = session.get("example-system:system")
        yield self.device_saw(3)
        self.clock.advance(5)
        yield self.assertFailure(d, RequestTimeout)
        reason = yield lost
        self.assertIn("timed out", str(reason))
        self.assertEqual(len(self.event("restconf.request.timeout")), 1)
        self.assertEqual(len(self.event("restconf.session.lost")), 1)
        # The timed-out request was already failed: nobody else was waiting.
        self.assertEqual(self.event("restconf.session.lost")[0]["outstanding"], 0)

    @defer.inlineCallbacks
    def test_device_closing_mid_request_fails_all_outstanding(self):
        session = yield self.call_home()
        lost = session.whenLost()
        self.device.hold()
        ds = [session.get("example-system:system"), session.invoke("example-ops:noop"), session.delete("x:y")]
        yield self.device_saw(3)
        self.device.drop_connections()
        for d in ds:
            yield self.assertFailure(d, SessionLost)
        yield lost
        event = self.event("restconf.session.lost")[0]
        self.assertEqual((event["reason"], event["outstanding"]), ("the device closed the connection", 3))
        later = session.get("example-system:system")
        yield self.assertFailure(later, SessionLost)

    def device_saw(self, count):
        """Until the device has seen C{count} requests (it fires on the request, no polling)."""
        return self.device.whenRequests(count)
