"""The test device itself: subtree filtering, edit-config rules, framing and knobs."""

from lxml import etree
from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from callhome_mux.netconf.framing import FrameDecoder, encode_chunked, encode_eom
from callhome_mux.netconf.namespaces import BASE_1_0, BASE_1_1, BASE_NS, HELLO, RPC_REPLY, qn
from callhome_mux.netconf.session import hello_message
from callhome_mux.netconf.xmlsafe import parse_fragment
from callhome_mux.testing.datastore import Datastore, EditError, apply_edit, subtree_filter
from callhome_mux.testing.netconf_device import NetconfServerProtocol

T = "urn:t"
DATA = f"""
<top xmlns="{T}">
  <users>
    <user><name>root</name><type>superuser</type><full-name>Charlie Root</full-name></user>
    <user><name>fred</name><type>admin</type><full-name>Fred Flintstone</full-name></user>
    <user><name>barney</name><type>admin</type><full-name>Barney Rubble</full-name></user>
  </users>
</top>"""


def store():
    return Datastore(running=DATA).running


def names(elements):
    return [u.findtext(f"{{{T}}}name") for e in elements for u in e.iter(f"{{{T}}}user")]


class SubtreeFilterTests(TestCase):
    """The RFC 6241 §6.4 examples, on the users list."""

    def select(self, text):
        return subtree_filter(parse_fragment(text), store())

    def test_selection_node_returns_whole_subtree(self):
        [top] = self.select(f'<top xmlns="{T}"><users/></top>')
        self.assertEqual(names([top]), ["root", "fred", "barney"])
        self.assertEqual(len(top.findall(f".//{{{T}}}full-name")), 3)

    def test_content_match_selects_matching_entries_entirely(self):
        [top] = self.select(f'<top xmlns="{T}"><users><user><type>admin</type></user></users></top>')
        self.assertEqual(names([top]), ["fred", "barney"])
        self.assertEqual(len(top.findall(f".//{{{T}}}full-name")), 2, "only content matches: whole entries")

    def test_content_match_with_selection_returns_only_selected(self):
        [top] = self.select(f'<top xmlns="{T}"><users><user><name>fred</name><type/></user></users></top>')
        [user] = top.iter(f"{{{T}}}user")
        self.assertEqual([etree.QName(c).localname for c in user], ["name", "type"])

    def test_false_content_match_drops_everything(self):
        self.assertEqual(self.select(f'<top xmlns="{T}"><users><user><name>wilma</name></user></users></top>'), [])

    def test_namespace_must_match(self):
        self.assertEqual(self.select('<top xmlns="urn:other"><users/></top>'), [])

    def test_several_entries_by_key(self):
        spec = f'<top xmlns="{T}"><users><user><name>root</name></user><user><name>barney</name></user></users></top>'
        self.assertEqual(names(self.select(spec)), ["root", "barney"])

    def test_empty_filter_selects_nothing(self):
        self.assertEqual(subtree_filter([], store()), [])


class EditTests(TestCase):
    def edit(self, text, default="merge"):
        running = store()
        apply_edit(running, parse_fragment(f'<top xmlns="{T}" xmlns:nc="{BASE_NS}">{text}</top>'), default)
        return running

    def test_merge_adds_new_list_entry(self):
        running = self.edit("<users><user><name>wilma</name><type>user</type></user></users>")
        self.assertEqual(names([running]), ["root", "fred", "barney", "wilma"])

    def test_merge_changes_leaf_of_matching_entry(self):
        running = self.edit("<users><user><name>fred</name><type>user</type></user></users>")
        fred = [u for u in running.iter(f"{{{T}}}user") if u.findtext(f"{{{T}}}name") == "fred"][0]
        self.assertEqual(fred.findtext(f"{{{T}}}type"), "user")
        self.assertEqual(fred.findtext(f"{{{T}}}full-name"), "Fred Flintstone")

    def test_replace_default_operation(self):
        running = self.edit("<users><user><name>fred</name></user></users>", default="replace")
        self.assertEqual(names([running]), ["fred"])

    def test_none_default_operation_requires_existing_data(self):
        error = self.assertRaises(EditError, self.edit, "<hostname>x</hostname>", "none")
        self.assertEqual(error.tag, "data-missing")

    def test_none_with_nested_create(self):
        running = self.edit('<users><user nc:operation="create"><name>wilma</name></user></users>', "none")
        self.assertIn("wilma", names([running]))

    def test_unknown_operation_refused(self):
        error = self.assertRaises(EditError, self.edit, '<users nc:operation="explode"/>')
        self.assertEqual(error.tag, "bad-attribute")

    def test_operation_attributes_do_not_reach_the_datastore(self):
        running = self.edit('<users><user nc:operation="replace"><name>fred</name></user></users>')
        self.assertNotIn(b"operation", etree.tostring(running))


class DeviceWireTests(TestCase):
    """The device on a StringTransport, driven byte by byte."""

    def setUp(self):
        self.clock = task.Clock()
        self.device = NetconfServerProtocol(Datastore(running=DATA), clock=self.clock)
        self.transport = StringTransport()
        self.device.makeConnection(self.transport)
        self.decoder = FrameDecoder()

    def messages(self):
        data, self.transport.io = self.transport.value(), __import__("io").BytesIO()
        self.decoder.push(data)
        found = []
        while (message := self.decoder.next_message()) is not None:
            found.append(etree.fromstring(message))
            if found[-1].tag == HELLO and self.device.base == "1.1":
                self.decoder.switch_to_chunked()
        return found

    def hello(self, capabilities=(BASE_1_0, BASE_1_1)):
        self.device.dataReceived(encode_eom(hello_message(capabilities)))

    def test_sends_hello_with_session_id(self):
        [hello] = self.messages()
        self.assertEqual(hello.findtext(qn("session-id")), str(self.device.session_id))
        capabilities = [c.text for c in hello.iter(qn("capability"))]
        self.assertIn(BASE_1_0, capabilities)
        self.assertIn(BASE_1_1, capabilities)

    def test_hello_and_rpc_in_one_read_switches_framing_between_them(self):
        self.messages()
        rpc = b'<rpc xmlns="%s" message-id="5"><get/></rpc>' % BASE_NS.encode()
        self.device.dataReceived(encode_eom(hello_message([BASE_1_1])) + encode_chunked(rpc))
        self.decoder.switch_to_chunked()
        [answer] = self.messages()
        self.assertEqual((answer.tag, answer.get("message-id")), (RPC_REPLY, "5"))

    def test_only_1_0_advertised(self):
        device = NetconfServerProtocol(Datastore(), bases=("1.0",), clock=self.clock)
        self.assertNotIn(BASE_1_1, device.capabilities)

    def test_rpc_without_message_id_gets_missing_attribute(self):
        self.messages()
        self.hello([BASE_1_0])
        self.device.dataReceived(encode_eom(b'<rpc xmlns="%s"><get/></rpc>' % BASE_NS.encode()))
        [answer] = self.messages()
        self.assertIsNone(answer.get("message-id"))
        self.assertEqual(answer.findtext(f"{qn('rpc-error')}/{qn('error-tag')}"), "missing-attribute")

    def test_reply_copies_rpc_attributes(self):
        self.messages()
        self.hello([BASE_1_0])
        self.device.dataReceived(encode_eom(b'<rpc xmlns="%s" xmlns:x="urn:x" message-id="9" x:tag="t"><get/></rpc>' % BASE_NS.encode()))
        [answer] = self.messages()
        self.assertEqual((answer.get("message-id"), answer.get("{urn:x}tag")), ("9", "t"))

    def test_reply_delay_uses_clock(self):
        self.messages()
        self.hello([BASE_1_0])
        self.device.reply_delay = 2.0
        self.device.dataReceived(encode_eom(b'<rpc xmlns="%s" message-id="1"><get/></rpc>' % BASE_NS.encode()))
        self.assertEqual(self.messages(), [])
        self.clock.advance(2)
        self.assertEqual([m.get("message-id") for m in self.messages()], ["1"])

    def test_stop_answering_still_records(self):
        self.messages()
        self.hello([BASE_1_0])
        self.device.stop_answering = True
        self.device.dataReceived(encode_eom(b'<rpc xmlns="%s" message-id="1"><get/></rpc>' % BASE_NS.encode()))
        self.assertEqual(self.messages(), [])
        self.assertEqual(len(self.device.received), 1)

    def test_garbage_closes_connection(self):
        self.messages()
        self.hello([BASE_1_1])
        self.device.dataReceived(b"garbage")
        self.assertTrue(self.transport.disconnecting)

    def test_notify_without_subscription_sends_nothing(self):
        self.messages()
        self.hello()
        self.assertFalse(self.device.notify('<e xmlns="urn:e"/>'))
        self.assertEqual(self.messages(), [])
