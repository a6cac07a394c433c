"""Parsing device XML: DOCTYPE and entities refused, ordinary documents accepted."""

from twisted.trial.unittest import TestCase

from callhome_mux.netconf.errors import NetconfProtocolError, UnsafeXMLError
from lxml import etree

from callhome_mux.netconf.xmlsafe import IncrementalParser, parse, parse_fragment


class ParseTests(TestCase):
    def test_plain_document_with_declaration_and_comment(self):
        root = parse(b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- hi --><rpc-reply xmlns="urn:x" a="1"/>')
        self.assertEqual(root.tag, "{urn:x}rpc-reply")
        self.assertEqual(root.get("a"), "1")

    def test_byte_order_mark_accepted(self):
        self.assertEqual(parse(b"\xef\xbb\xbf<a/>").tag, "a")

    def test_predefined_and_character_references_still_work(self):
        self.assertEqual(parse(b"<a>&lt;&amp;&#65;</a>").text, "<&A")

    def test_internal_entity_doctype_refused(self):
        document = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "boom">]><a>&e;</a>'
        error = self.assertRaises(UnsafeXMLError, parse, document)
        self.assertIn("DOCTYPE", str(error))

    def test_billion_laughs_refused(self):
        lol = b"".join(b'<!ENTITY l%d "&l%d;&l%d;&l%d;&l%d;">' % (i, i - 1, i - 1, i - 1, i - 1) for i in range(1, 10))
        document = b'<!DOCTYPE a [<!ENTITY l0 "lol">' + lol + b"]><a>&l9;</a>"
        self.assertRaises(UnsafeXMLError, parse, document)

    def test_external_entity_refused(self):
        document = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
        self.assertRaises(UnsafeXMLError, parse, document)

    def test_doctype_after_comments_refused(self):
        self.assertRaises(UnsafeXMLError, parse, b"<!-- a --> <?pi x?>\n<!DOCTYPE a SYSTEM 'http://x/y.dtd'><a/>")

    def test_doctype_in_utf16_document_refused(self):
        document = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a><a/>'.encode("utf-16")
        self.assertRaises(UnsafeXMLError, parse, document)

    def test_undeclared_entity_refused(self):
        error = self.assertRaises(UnsafeXMLError, parse, b"<a>&nope;</a>")
        self.assertIn("malformed XML", str(error))

    def test_malformed_refused_as_protocol_error(self):
        self.assertRaises(NetconfProtocolError, parse, b"<a><b></a>")

    def test_doctype_text_inside_cdata_is_only_text(self):
        self.assertEqual(parse(b"<a><![CDATA[<!DOCTYPE x>]]></a>").text, "<!DOCTYPE x>")


class FragmentTests(TestCase):
    def test_several_top_level_elements(self):
        elements = parse_fragment('<?xml version="1.0"?><a xmlns="urn:a"/><b/>')
        self.assertEqual([e.tag for e in elements], ["{urn:a}a", "b"])

    def test_fragment_with_doctype_refused(self):
        self.assertRaises(UnsafeXMLError, parse_fragment, '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>')


def fed(document: bytes, cuts, window: int = 16):
    """C{document} given to an IncrementalParser in the pieces between C{cuts}."""
    parser = IncrementalParser(prolog_window=window)
    start = 0
    for cut in list(cuts) + [len(document)]:
        parser.feed(document[start:cut])
        start = cut
    return parser.close()


class IncrementalParseTests(TestCase):
    """The feed path must accept and refuse exactly what parse() does, however the bytes are cut."""

    REPLY = (b'<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="7">'
             b'<data><a x="1">text &amp; more</a><b/><c><![CDATA[<x>]]></c></data></rpc-reply>')

    def test_split_at_every_byte_boundary_gives_the_same_tree(self):
        expected = etree.tostring(parse(self.REPLY))
        for cut in range(len(self.REPLY) + 1):
            self.assertEqual(etree.tostring(fed(self.REPLY, [cut])), expected, f"cut at {cut}")

    def test_one_byte_at_a_time(self):
        root = fed(self.REPLY, range(1, len(self.REPLY)))
        self.assertEqual(root.get("message-id"), "7")

    def test_doctype_refused_at_every_split(self):
        document = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "boom">]><a>&e;</a>'
        for cut in range(len(document) + 1):
            with self.assertRaises(UnsafeXMLError, msg=f"cut at {cut}") as caught:
                fed(document, [cut])
            self.assertIn("DOCTYPE", str(caught.exception))

    def test_doctype_after_a_prolog_longer_than_the_window_refused(self):
        document = b"<!--" + b"c" * 200 + b"-->" + b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'
        self.assertRaises(UnsafeXMLError, fed, document, range(10, len(document), 10), 16)

    def test_long_prolog_then_ordinary_document_accepted(self):
        document = b'<?xml version="1.0"?>' + b"<!-- " + b"c" * 200 + b" -->" + self.REPLY
        self.assertEqual(fed(document, range(7, len(document), 7)).get("message-id"), "7")

    def test_doctype_in_utf16_document_refused(self):
        document = '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'.encode("utf-16")
        self.assertRaises(UnsafeXMLError, fed, document, range(3, len(document), 3), 8)

    def test_malformed_refused(self):
        self.assertRaises(UnsafeXMLError, fed, self.REPLY.replace(b"</data>", b"</date>"), range(5, 300, 5))

    def test_truncated_refused(self):
        self.assertRaises(UnsafeXMLError, fed, self.REPLY[:-5], [40, 80])

    def test_entities_are_not_expanded(self):
        self.assertRaises(UnsafeXMLError, fed, b"<a>" + b"x" * 40 + b"&undefined;</a>", [20, 30])
