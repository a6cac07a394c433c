"""Parsing device XML: DOCTYPE and entities refused, ordinary documents accepted."""

from twisted.trial.unittest import TestCase

from callhome_mux.netconf.errors import NetconfProtocolError, UnsafeXMLError
from callhome_mux.netconf.xmlsafe import parse, parse_fragment


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
