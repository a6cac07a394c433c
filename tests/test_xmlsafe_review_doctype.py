"""
Review of 520dc31 (large messages parsed once complete with xmlsafe.parse):
a DOCTYPE is refused whatever the document's encoding.

xmlsafe.parse skipped its after-parse DOCTYPE check whenever the byte where
its ASCII prolog check stopped was "<": true of a UTF-16LE document without
a byte-order mark ("<\\0?\\0xml ...", which libxml2 detects by itself) and of
a document whose ASCII XML declaration names an encoding in which the rest
is not ASCII (UTF-7's "<+ACE-DOCTYPE").  Such a document with a DOCTYPE and
an internal subset was accepted.  Large NETCONF messages used to be parsed
by the incremental parser, which always asks libxml2 (and refused them);
since 520dc31 they go through xmlsafe.parse too.  RESTCONF bodies always
did.

Also: the session looked for <rpc-error> only in replies whose bytes hold
"rpc-error" when they start with "<", which a UTF-16LE reply without a
byte-order mark does: its errors were taken for success.
"""

from __future__ import annotations

from twisted.internet import reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.events import EventBus
from callhome_mux.netconf import parse_stream, xmlsafe
from callhome_mux.netconf.errors import SessionLostError, UnsafeXMLError
from callhome_mux.netconf.framing import encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_1, BASE_NS
from callhome_mux.netconf.parse_stream import InlineStream, ParseWorker
from callhome_mux.netconf.session import NetconfClientProtocol, hello_message

_SUBSET = '<!DOCTYPE rpc-reply [<!ENTITY e "entity">]>'
_REPLY = '<rpc-reply xmlns="' + BASE_NS + '" message-id="1"><data>' + "<n>x</n>" * 9000 + "<n>&e;</n></data></rpc-reply>"


def utf16le_without_bom(body: str = _REPLY) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-16LE"?>' + _SUBSET + body).encode("utf-16-le")


def utf7_declared(body: str = _REPLY) -> bytes:
    # "!" written the UTF-7 way ("+ACE-"; Python's codec leaves it direct).
    subset = _SUBSET.replace("!", "+ACE-").encode("ascii")
    return b'<?xml version="1.0" encoding="UTF-7"?>' + subset + body.encode("ascii")


class DoctypeInOtherEncodingsTests(TestCase):
    def assertRefused(self, document: bytes):
        with self.assertRaises(UnsafeXMLError) as raised:
            xmlsafe.parse(document)
        self.assertIn("DOCTYPE", str(raised.exception))

    def test_utf16le_without_bom_refused(self):
        document = utf16le_without_bom()
        self.assertEqual(document[:4], b"<\x00?\x00")
        self.assertRefused(document)

    def test_utf7_declared_refused(self):
        document = utf7_declared()
        self.assertTrue(b"<+ACE-DOCTYPE" in document and b"<!DOCTYPE" not in document)
        self.assertRefused(document)

    def test_worker_parser_refuses_too(self):
        for document in (utf16le_without_bom(), utf7_declared()):
            with self.assertRaises(UnsafeXMLError):
                xmlsafe.parse(document, xmlsafe.make_parser())

    def test_inline_stream_refuses_as_before(self):
        """The incremental parser (inline streaming) always refused these: the same answer now everywhere."""
        for document in (utf16le_without_bom(), utf7_declared()):
            stream = InlineStream(64)
            with self.assertRaises(UnsafeXMLError):
                for start in range(0, len(document) - 1000, 1000):
                    stream.feed(document[start : start + 1000])
                self.failureResultOf(stream.finish(document[start + 1000 :]), UnsafeXMLError).raiseException()

    def test_same_documents_without_doctype_still_parse(self):
        """Only the DOCTYPE is refused: those encodings are fine otherwise."""
        body = _REPLY.replace("&e;", "plain")
        for document in (utf16le_without_bom(body).replace(_SUBSET.encode("utf-16-le"), b""),
                         utf7_declared(body).replace(_SUBSET.replace("!", "+ACE-").encode("ascii"), b"")):
            self.assertEqual(len(xmlsafe.parse(document)[0]), 9001)

    def test_large_netconf_reply_refused_through_the_worker(self):
        """End to end in the session: a >64 KiB reply, parsed in the worker once complete, ends the session."""
        clock = task.Clock()
        self.patch(parse_stream, "WORKER", ParseWorker())
        client = NetconfClientProtocol(EventBus(clock=clock), clock=clock, parse_threads=reactor)
        transport = StringTransport()
        client.makeConnection(transport)
        client.dataReceived(encode_eom(hello_message([BASE_1_1], 3)))
        session = self.successResultOf(client.whenReady())
        pending = session.rpc(b"<get/>")
        document = utf16le_without_bom()
        self.assertGreater(len(document), client.stream_after)
        client.dataReceived(encode_chunked(document, 4096))
        d = self.assertFailure(pending, SessionLostError)
        return d.addCallback(lambda error: self.assertIn("DOCTYPE", str(error)))


class RpcErrorInOtherEncodingsTests(TestCase):
    """
    The session skips looking for <rpc-error> in a reply whose bytes lack
    "rpc-error" (most replies): only sound when those bytes are ASCII.  A
    UTF-16LE reply without a byte-order mark starts with "<" too, and its
    errors were taken for success.
    """

    def test_small_utf16le_reply_with_an_error_fails_the_rpc(self):
        from callhome_mux.netconf.errors import RPCError

        clock = task.Clock()
        client = NetconfClientProtocol(EventBus(clock=clock), clock=clock)
        client.makeConnection(StringTransport())
        client.dataReceived(encode_eom(hello_message([BASE_1_1], 3)))
        session = self.successResultOf(client.whenReady())
        pending = session.rpc(b"<get/>")
        reply = ('<?xml version="1.0" encoding="UTF-16LE"?><rpc-reply xmlns="' + BASE_NS + '" message-id="1"><rpc-error><error-type>application</error-type>'
                 "<error-tag>operation-failed</error-tag><error-severity>error</error-severity></rpc-error></rpc-reply>")
        document = reply.encode("utf-16-le")
        self.assertTrue(document.startswith(b"<\x00?\x00") and b"rpc-error" not in document)
        client.dataReceived(encode_chunked(document, 4096))
        self.failureResultOf(pending, RPCError)
