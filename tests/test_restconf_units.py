"""
RESTCONF pieces without a network: settings, safe decoding, error replies,
query building, discovery parsing.
"""

from twisted.trial import unittest

from callhome_mux.restconf.discovery import parse_yang_library, root_from_host_meta
from callhome_mux.restconf.encoding import accept_header, decode, encode, encoding_of, parse_xml
from callhome_mux.restconf.error_reply import error_from_reply
from callhome_mux.restconf.errors import UnsafeContent
from callhome_mux.restconf.query import build_query, join_path, list_instance
from callhome_mux.restconf.settings import RestconfSettings
from callhome_mux.settings import ConfigError, from_table


class SettingsTests(unittest.TestCase):
    def test_defaults(self):
        settings = from_table(RestconfSettings, None, "restconf")
        self.assertEqual(settings.default_encoding, "json")
        self.assertGreater(settings.request_timeout, 0)

    def test_from_table_with_dashes(self):
        settings = from_table(
            RestconfSettings,
            {"request-timeout": 5, "max-response-body": 4096, "discovery-timeout": 2, "default-encoding": "xml"},
            "restconf",
        )
        self.assertEqual((settings.request_timeout, settings.max_response_body), (5.0, 4096))
        self.assertEqual(settings.default_encoding, "xml")

    def test_bad_values_name_the_key(self):
        for table, key in (
            ({"default-encoding": "yaml"}, "restconf.default_encoding"),
            ({"request-timeout": 0}, "restconf.request_timeout"),
            ({"max-response-body": 10}, "restconf.max_response_body"),
            ({"fallback-root": "restconf"}, "restconf.fallback_root"),
            ({"colour": "red"}, "restconf.colour"),
        ):
            with self.assertRaises(ConfigError) as caught:
                from_table(RestconfSettings, table, "restconf")
            self.assertEqual(caught.exception.key, key)


class EncodingTests(unittest.TestCase):
    def test_media_types(self):
        self.assertEqual(encoding_of("application/yang-data+json; charset=utf-8"), "json")
        self.assertEqual(encoding_of("application/yang-data+xml"), "xml")
        self.assertIsNone(encoding_of("text/html"))
        self.assertTrue(accept_header("xml").startswith("application/yang-data+xml"))

    def test_doctype_refused(self):
        evil = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "boom">]><a>&x;</a>'
        self.assertRaises(UnsafeContent, parse_xml, evil)
        self.assertRaises(UnsafeContent, decode, evil, "application/yang-data+xml")

    def test_doctype_hidden_by_utf16_refused(self):
        evil = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a [<!ENTITY x "boom">]><a>&x;</a>'.encode("utf-16")
        self.assertRaises(UnsafeContent, parse_xml, evil)

    def test_external_entity_never_read(self):
        evil = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
        self.assertRaises(UnsafeContent, parse_xml, evil)

    def test_malformed(self):
        self.assertRaises(UnsafeContent, decode, b"<a>", "application/yang-data+xml")
        self.assertRaises(UnsafeContent, decode, b"{", "application/yang-data+json")

    def test_element_from_dict(self):
        from callhome_mux.restconf.encoding import element_from_dict

        element = element_from_dict("input", "urn:x", {"a": 1, "m:flag": True, "c": {"d": "e"}, "l": ["p", "q"]})
        self.assertEqual(
            encode(element, "xml"),
            b'<input xmlns="urn:x"><a>1</a><flag>true</flag><c><d>e</d></c><l>p</l><l>q</l></input>',
        )

    def test_decode_and_encode(self):
        self.assertEqual(decode(b'{"a:b": 1}', "application/yang-data+json"), {"a:b": 1})
        self.assertIsNone(decode(b"", "application/yang-data+json"))
        self.assertEqual(decode(b"hi", "text/plain"), b"hi")
        self.assertEqual(encode({"a:b": 1}, "json"), b'{"a:b":1}')
        self.assertEqual(encode(parse_xml(b"<a>1</a>"), "xml"), b"<a>1</a>")
        self.assertRaises(TypeError, encode, {"a": 1}, "xml")


JSON_ERRORS = b"""{"ietf-restconf:errors": {"error": [
  {"error-type": "application", "error-tag": "invalid-value", "error-app-tag": "x:range",
   "error-path": "/x:a/b", "error-message": "out of range", "error-info": {"x:max": 10}},
  {"error-type": "protocol", "error-tag": "data-missing"}]}}"""

XML_ERRORS = b"""<errors xmlns="urn:ietf:params:xml:ns:yang:ietf-restconf">
  <error><error-type>application</error-type><error-tag>invalid-value</error-tag>
    <error-app-tag>x:range</error-app-tag><error-path xmlns:x="urn:x">/x:a/x:b</error-path>
    <error-message>out of range</error-message><error-info><max xmlns="urn:x">10</max></error-info></error>
  <error><error-type>protocol</error-type><error-tag>data-missing</error-tag></error>
</errors>"""


class ErrorReplyTests(unittest.TestCase):
    def test_json_errors_keep_every_field(self):
        error = error_from_reply(400, "application/yang-data+json", JSON_ERRORS, "GET", "/restconf/data/x:a")
        self.assertEqual(error.status, 400)
        self.assertEqual(error.error_tags, ("invalid-value", "data-missing"))
        first = error.errors[0]
        self.assertEqual(
            (first.error_type, first.error_app_tag, first.error_path, first.error_message, first.error_info),
            ("application", "x:range", "/x:a/b", "out of range", {"x:max": 10}),
        )
        self.assertIn("out of range", str(error))

    def test_xml_errors_keep_every_field(self):
        error = error_from_reply(409, "application/yang-data+xml", XML_ERRORS)
        self.assertEqual(error.status, 409)
        self.assertEqual(len(error.errors), 2)
        first = error.errors[0]
        self.assertEqual((first.error_type, first.error_tag, first.error_app_tag), ("application", "invalid-value", "x:range"))
        self.assertEqual((first.error_path, first.error_message), ("/x:a/x:b", "out of range"))
        self.assertEqual(first.error_info[0].text, "10")
        self.assertIsNone(error.errors[1].error_message)

    def test_not_an_errors_document(self):
        error = error_from_reply(502, "text/html", b"<html>bad gateway</html>")
        self.assertEqual((error.status, error.errors), (502, ()))
        self.assertEqual(error.body, b"<html>bad gateway</html>")

    def test_unsafe_errors_document_gives_no_entries(self):
        error = error_from_reply(400, "application/yang-data+xml", b"<!DOCTYPE x><x/>")
        self.assertEqual(error.errors, ())


class QueryTests(unittest.TestCase):
    def test_build_query(self):
        self.assertEqual(build_query(), "")
        self.assertEqual(
            build_query(depth=2, fields=["a", "b/c"], content="config", with_defaults="report-all"),
            "depth=2&fields=a;b/c&content=config&with-defaults=report-all",
        )
        self.assertEqual(build_query(depth="unbounded"), "depth=unbounded")

    def test_bad_query_values(self):
        for bad in ({"depth": 0}, {"depth": True}, {"content": "state"}, {"with_defaults": "all"}, {"fields": ""}):
            self.assertRaises(ValueError, build_query, **bad)

    def test_paths(self):
        self.assertEqual(list_instance("interface", "eth0/1", "a,b"), "interface=eth0%2F1,a%2Cb")
        self.assertEqual(join_path("/restconf/data", "/x:a/b=c d/"), "/restconf/data/x:a/b=c%20d")
        self.assertEqual(join_path("/restconf/data", ""), "/restconf/data")
        self.assertEqual(join_path("/restconf/data", "x:a/b=eth0%2F1"), "/restconf/data/x:a/b=eth0%2F1")


class DiscoveryParsingTests(unittest.TestCase):
    def test_xrd(self):
        body = b'<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="author" href="/x"/><Link rel="restconf" href="/top/restconf/"/></XRD>'
        self.assertEqual(root_from_host_meta("application/xrd+xml", body), "/top/restconf")

    def test_jrd(self):
        body = b'{"links": [{"rel": "restconf", "href": "/rc"}]}'
        self.assertEqual(root_from_host_meta("application/json", body), "/rc")

    def test_no_link(self):
        self.assertIsNone(root_from_host_meta("application/xrd+xml", b'<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"/>'))

    def test_xrd_with_doctype_refused(self):
        self.assertRaises(UnsafeContent, root_from_host_meta, "application/xrd+xml", b"<!DOCTYPE XRD><XRD/>")

    def test_yang_library_json(self):
        body = b"""{"ietf-yang-library:yang-library": {"content-id": "42", "module-set": [
            {"name": "s", "module": [{"name": "a", "revision": "2020-01-01", "namespace": "urn:a"}, {"name": "b"}]}]}}"""
        library = parse_yang_library("application/yang-data+json", body)
        self.assertEqual(library.summary(), {"yang_library": "yang-library", "module_count": 2, "content_id": "42"})
        self.assertEqual(library.namespace("a"), "urn:a")

    def test_modules_state_xml(self):
        body = b"""<modules-state xmlns="urn:ietf:params:xml:ns:yang:ietf-yang-library">
            <module-set-id>7</module-set-id>
            <module><name>a</name><revision>2020-01-01</revision><namespace>urn:a</namespace></module>
        </modules-state>"""
        library = parse_yang_library("application/yang-data+xml", body)
        self.assertEqual((library.source, library.content_id, len(library.modules)), ("modules-state", "7", 1))
        self.assertTrue(library.has("a"))

    def test_neither(self):
        self.assertRaises(UnsafeContent, parse_yang_library, "application/yang-data+json", b'{"x:y": {}}')
