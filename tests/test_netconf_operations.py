"""Each operation helper against the test device, in memory."""

from lxml import etree
from twisted.internet import task
from twisted.trial.unittest import TestCase

from callhome_mux.netconf.errors import CapabilityError, RPCError
from callhome_mux.netconf.namespaces import BASE_NS, CONFIRMED_COMMIT_1_1, WITH_DEFAULTS_NS, qn
from callhome_mux.netconf.operations import SubtreeFilter, XPathFilter, build_filter
from callhome_mux.netconf.session import NetconfClientProtocol
from callhome_mux.testing.netconf_device import Datastore, NetconfServerProtocol, connect_in_memory

T = "urn:example:top"
RUNNING = f"""
<top xmlns="{T}">
  <hostname>r1</hostname>
  <interfaces>
    <interface><name>eth0</name><mtu>1500</mtu><enabled>true</enabled></interface>
    <interface><name>eth1</name><mtu>9000</mtu><enabled>false</enabled></interface>
  </interfaces>
</top>"""
YANG = "module example { namespace urn:example:top; prefix t; }"


def t(path: str) -> str:
    """A path of local names in namespace T, in ElementPath form."""
    return "/".join(f"{{{T}}}{step}" for step in path.split("/"))


class OperationsMixin:
    def connect(self, candidate=True, datastore=None, **device_options):
        self.clock = task.Clock()
        self.datastore = datastore or Datastore(
            running=RUNNING, candidate=candidate, schemas={"example": YANG, ("example", "2020-01-01"): "old"},
            state=f'<stats xmlns="{T}"><uptime>42</uptime></stats>',
        )
        self.device = NetconfServerProtocol(self.datastore, clock=self.clock, **device_options)
        self.client = NetconfClientProtocol(clock=self.clock, device_id="dev")
        self.pump = connect_in_memory(self.device, self.client)
        self.pump.flush()
        return self.successResultOf(self.client.whenReady())

    def result(self, deferred):
        self.pump.flush()
        return self.successResultOf(deferred)

    def failure(self, deferred, *types):
        self.pump.flush()
        return self.failureResultOf(deferred, *types).value

    def last_operation(self):
        return self.device.received[-1][0]


class ReadTests(OperationsMixin, TestCase):
    def test_get_returns_config_and_state(self):
        session = self.connect()
        data = self.result(session.get())
        self.assertEqual(data.tag, qn("data"))
        self.assertEqual(data.findtext(t("top/hostname")), "r1")
        self.assertEqual(data.findtext(t("stats/uptime")), "42")

    def test_get_config_has_no_state(self):
        session = self.connect()
        data = self.result(session.get_config())
        self.assertEqual(data.findtext(t("top/hostname")), "r1")
        self.assertIsNone(data.find(t("stats")))

    def test_get_config_subtree_filter_text(self):
        session = self.connect()
        data = self.result(session.get_config(filter=f'<top xmlns="{T}"><hostname/></top>'))
        self.assertEqual(etree.tostring(data[0], method="c14n"),
                         f'<top xmlns="{T}"><hostname>r1</hostname></top>'.encode())
        sent = self.last_operation().find(qn("filter"))
        self.assertEqual(sent.get("type"), "subtree")

    def test_subtree_filter_content_match_selects_list_entry(self):
        session = self.connect()
        spec = SubtreeFilter(f'<top xmlns="{T}"><interfaces><interface><name>eth1</name><mtu/></interface></interfaces></top>')
        data = self.result(session.get_config(filter=spec))
        [entry] = data.findall(t("top/interfaces/interface"))
        self.assertEqual([etree.QName(c).localname for c in entry], ["name", "mtu"])
        self.assertEqual(entry.findtext(t("mtu")), "9000")

    def test_subtree_filter_with_no_match_gives_empty_data(self):
        session = self.connect()
        data = self.result(session.get_config(filter=f'<top xmlns="{T}"><interfaces><interface><name>nope</name></interface></interfaces></top>'))
        self.assertEqual(len(data), 0)

    def test_subtree_filter_element(self):
        session = self.connect()
        selection = etree.Element(f"{{{T}}}top")
        etree.SubElement(selection, f"{{{T}}}hostname")
        data = self.result(session.get(filter=selection))
        self.assertEqual(data.findtext(t("top/hostname")), "r1")
        self.assertEqual(len(selection), 1, "the caller's element is not moved")

    def test_xpath_filter(self):
        session = self.connect()
        data = self.result(session.get_config(filter=XPathFilter("/t:top/t:interfaces/t:interface[t:name='eth0']/t:mtu", {"t": T})))
        [entry] = data.findall(t("top/interfaces/interface"))
        self.assertEqual(entry.findtext(t("name")), "eth0")
        self.assertEqual(entry.findtext(t("mtu")), "1500")
        self.assertIsNone(entry.find(t("enabled")))
        sent = self.last_operation().find(qn("filter"))
        self.assertEqual((sent.get("type"), sent.nsmap.get("t")), ("xpath", T))

    def test_with_defaults_is_sent(self):
        session = self.connect()
        self.result(session.get_config(source="running", with_defaults="report-all"))
        self.assertEqual(self.last_operation().findtext(f"{{{WITH_DEFAULTS_NS}}}with-defaults"), "report-all")

    def test_bad_with_defaults_raises(self):
        session = self.connect()
        self.assertRaises(ValueError, session.get, with_defaults="everything")

    def test_get_config_from_candidate(self):
        session = self.connect()
        self.result(session.edit_config(f'<top xmlns="{T}"><hostname>r2</hostname></top>', target="candidate"))
        self.assertEqual(self.result(session.get_config("candidate")).findtext(t("top/hostname")), "r2")
        self.assertEqual(self.result(session.get_config("running")).findtext(t("top/hostname")), "r1")

    def test_get_config_unknown_datastore(self):
        session = self.connect(candidate=False)
        error = self.failure(session.get_config("candidate"), RPCError)
        self.assertEqual(error.tag, "invalid-value")

    def test_get_schema(self):
        session = self.connect()
        self.assertEqual(self.result(session.get_schema("example")), YANG)
        self.assertEqual(self.result(session.get_schema("example", version="2020-01-01")), "old")
        self.assertEqual(self.failure(session.get_schema("missing"), RPCError).tag, "invalid-value")

    def test_build_filter_forms(self):
        self.assertIsNone(build_filter(None))
        self.assertEqual(build_filter(("xpath", "/a")).get("select"), "/a")
        self.assertEqual(build_filter(("subtree", "<a/><b/>")).get("type"), "subtree")
        self.assertEqual(len(build_filter("<a/><b/>")), 2)


class EditTests(OperationsMixin, TestCase):
    def mtu(self, session, name, source="running"):
        data = self.result(session.get_config(source))
        for entry in data.iterfind(t("top/interfaces/interface")):
            if entry.findtext(t("name")) == name:
                return entry.findtext(t("mtu"))
        return None

    def test_merge(self):
        session = self.connect()
        edit = f'<top xmlns="{T}"><interfaces><interface><name>eth0</name><mtu>1400</mtu></interface></interfaces></top>'
        self.assertIsNotNone(self.result(session.edit_config(edit)).find(qn("ok")))
        self.assertEqual(self.mtu(session, "eth0"), "1400")
        self.assertEqual(self.mtu(session, "eth1"), "9000")

    def test_config_root_is_unwrapped_not_nested(self):
        # What ncclient users write: a <config> root, bare or in NETCONF's namespace.
        session = self.connect()
        for wrapper in ("<config>", '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'):
            edit = (
                f'{wrapper}<top xmlns="{T}"><interfaces><interface><name>eth0</name>'
                f"<mtu>1300</mtu></interface></interfaces></top></config>"
            )
            self.result(session.edit_config(edit))
            sent = self.last_operation().find(qn("config"))
            self.assertEqual([etree.QName(child).localname for child in sent], ["top"])
            self.assertEqual(self.mtu(session, "eth0"), "1300")
        # A <config> in some other namespace is data, and stays as given.
        self.result(session.edit_config('<config xmlns="urn:example:app"/>'))
        self.assertEqual(etree.QName(self.last_operation().find(qn("config"))[0]).namespace, "urn:example:app")

    def test_options_are_sent(self):
        session = self.connect()
        self.result(session.edit_config(f'<top xmlns="{T}"/>', default_operation="none",
                                        test_option="test-then-set", error_option="rollback-on-error"))
        operation = self.last_operation()
        self.assertEqual(
            [operation.findtext(qn(n)) for n in ("default-operation", "test-option", "error-option")],
            ["none", "test-then-set", "rollback-on-error"],
        )

    def test_bad_option_raises(self):
        session = self.connect()
        self.assertRaises(ValueError, session.edit_config, "<a/>", test_option="maybe")

    def test_create_existing_fails_with_data_exists(self):
        session = self.connect()
        edit = (f'<top xmlns="{T}" xmlns:nc="{BASE_NS}"><interfaces><interface nc:operation="create">'
                "<name>eth0</name></interface></interfaces></top>")
        error = self.failure(session.edit_config(edit), RPCError)
        self.assertEqual(error.tag, "data-exists")
        self.assertIn("interface", error.errors[0].path)

    def test_delete_and_remove(self):
        session = self.connect()
        delete = (f'<top xmlns="{T}" xmlns:nc="{BASE_NS}"><interfaces><interface nc:operation="delete">'
                  "<name>eth1</name></interface></interfaces></top>")
        self.result(session.edit_config(delete))
        self.assertIsNone(self.mtu(session, "eth1"))
        self.assertEqual(self.failure(session.edit_config(delete), RPCError).tag, "data-missing")
        self.result(session.edit_config(delete.replace('"delete"', '"remove"')))

    def test_replace(self):
        session = self.connect()
        edit = (f'<top xmlns="{T}" xmlns:nc="{BASE_NS}"><interfaces><interface nc:operation="replace">'
                "<name>eth0</name><mtu>100</mtu></interface></interfaces></top>")
        self.result(session.edit_config(edit))
        data = self.result(session.get_config())
        entry = data.find(t("top/interfaces/interface"))
        self.assertEqual([etree.QName(c).localname for c in entry], ["name", "mtu"])

    def test_failed_edit_changes_nothing(self):
        session = self.connect()
        edit = (f'<top xmlns="{T}" xmlns:nc="{BASE_NS}"><hostname>changed</hostname><interfaces>'
                '<interface nc:operation="delete"><name>ghost</name></interface></interfaces></top>')
        self.failure(session.edit_config(edit), RPCError)
        self.assertEqual(self.result(session.get_config()).findtext(t("top/hostname")), "r1")

    def test_test_only_changes_nothing(self):
        session = self.connect()
        self.result(session.edit_config(f'<top xmlns="{T}"><hostname>x</hostname></top>', test_option="test-only"))
        self.assertEqual(self.result(session.get_config()).findtext(t("top/hostname")), "r1")

    def test_copy_config_and_delete_config(self):
        session = self.connect()
        self.result(session.copy_config("candidate", f'<top xmlns="{T}"><hostname>copy</hostname></top>'))
        self.assertEqual(self.result(session.get_config("candidate")).findtext(t("top/hostname")), "copy")
        self.result(session.copy_config("candidate", "running"))
        self.assertEqual(self.result(session.get_config("candidate")).findtext(t("top/hostname")), "r1")
        self.result(session.delete_config("candidate"))
        self.assertEqual(len(self.result(session.get_config("candidate"))), 0)
        self.assertEqual(self.failure(session.delete_config("running"), RPCError).tag, "operation-not-supported")

    def test_copy_config_url_target_is_sent_as_url(self):
        session = self.connect()
        self.failure(session.copy_config("file:///tmp/x.xml", "running"), RPCError)
        self.assertEqual(self.last_operation().findtext(f"{qn('target')}/{qn('url')}"), "file:///tmp/x.xml")

    def test_validate(self):
        session = self.connect()
        self.assertIsNotNone(self.result(session.validate()).find(qn("ok")))
        self.result(session.validate(f'<top xmlns="{T}"/>'))
        self.assertIsNotNone(self.last_operation().find(f"{qn('source')}/{qn('config')}"))


class CandidateTests(OperationsMixin, TestCase):
    def edit_hostname(self, session, name):
        return self.result(session.edit_config(f'<top xmlns="{T}"><hostname>{name}</hostname></top>', target="candidate"))

    def hostname(self, session):
        return self.result(session.get_config()).findtext(t("top/hostname"))

    def test_commit(self):
        session = self.connect()
        self.edit_hostname(session, "r2")
        self.result(session.commit())
        self.assertEqual(self.hostname(session), "r2")

    def test_discard_changes(self):
        session = self.connect()
        self.edit_hostname(session, "r2")
        self.result(session.discard_changes())
        self.assertEqual(self.result(session.get_config("candidate")).findtext(t("top/hostname")), "r1")

    def test_confirmed_commit_rolls_back_without_confirmation(self):
        session = self.connect()
        self.edit_hostname(session, "r2")
        self.result(session.commit(confirmed=True, confirm_timeout=30))
        operation = self.last_operation()
        self.assertIsNotNone(operation.find(qn("confirmed")))
        self.assertEqual(operation.findtext(qn("confirm-timeout")), "30")
        self.assertEqual(self.hostname(session), "r2")
        self.clock.advance(30)
        self.assertEqual(self.hostname(session), "r1")

    def test_confirmed_commit_confirmed(self):
        session = self.connect()
        self.edit_hostname(session, "r2")
        self.result(session.commit(confirmed=True, confirm_timeout=30))
        self.result(session.commit())
        self.clock.advance(60)
        self.assertEqual(self.hostname(session), "r2")

    def test_cancel_commit_with_persist(self):
        session = self.connect()
        self.edit_hostname(session, "r2")
        self.result(session.commit(confirmed=True, persist="token-1"))
        self.assertEqual(self.last_operation().findtext(qn("persist")), "token-1")
        self.result(session.cancel_commit(persist_id="token-1"))
        self.assertEqual(self.last_operation().findtext(qn("persist-id")), "token-1")
        self.assertEqual(self.hostname(session), "r1")

    def test_confirmed_commit_refused_without_capability(self):
        session = self.connect(confirmed_commit=False)
        self.assertFalse(session.has_capability(CONFIRMED_COMMIT_1_1))
        sent = len(self.device.received)
        error = self.failureResultOf(session.commit(confirmed=True), CapabilityError).value
        self.assertIn(":confirmed-commit", str(error))
        self.failureResultOf(session.cancel_commit(), CapabilityError)
        self.pump.flush()
        self.assertEqual(len(self.device.received), sent, "nothing was sent")

    def test_persist_needs_confirmed(self):
        session = self.connect()
        self.assertRaises(ValueError, session.commit, persist="x")
        self.assertRaises(ValueError, session.commit, confirmed=True, confirm_timeout=0)

    def test_commit_without_candidate(self):
        session = self.connect(candidate=False)
        self.assertEqual(self.failure(session.commit(), RPCError).tag, "operation-not-supported")


class LockAndSessionTests(OperationsMixin, TestCase):
    def second_session(self):
        device = NetconfServerProtocol(self.datastore, clock=self.clock)
        client = NetconfClientProtocol(clock=self.clock, device_id="dev")
        pump = connect_in_memory(device, client)
        pump.flush()
        return self.successResultOf(client.whenReady()), pump

    def test_lock_denied_to_other_session(self):
        first = self.connect()
        second, pump = self.second_session()
        self.result(first.lock("running"))
        denied = second.lock("running")
        pump.flush()
        error = self.failureResultOf(denied, RPCError).value
        self.assertEqual((error.tag, error.type), ("lock-denied", "protocol"))
        self.assertEqual(error.errors[0].info.findtext(qn("session-id")), str(first.session_id))
        edit = second.edit_config(f'<top xmlns="{T}"><hostname>x</hostname></top>')
        pump.flush()
        self.assertEqual(self.failureResultOf(edit, RPCError).value.tag, "in-use")
        self.result(first.unlock("running"))
        again = second.lock("running")
        pump.flush()
        self.successResultOf(again)

    def test_unlock_without_lock_fails(self):
        session = self.connect()
        self.assertEqual(self.failure(session.unlock("running"), RPCError).tag, "operation-failed")

    def test_lock_released_when_session_ends(self):
        first = self.connect()
        second, pump = self.second_session()
        self.result(first.lock("candidate"))
        self.assertEqual(self.datastore.locks, {"candidate": first.session_id})
        first.close()
        self.pump.flush()
        self.assertEqual(self.datastore.locks, {})

    def test_kill_session(self):
        first = self.connect()
        second, pump = self.second_session()
        lost = second.whenLost()
        self.result(first.kill_session(second.session_id))
        pump.flush()
        self.assertIsInstance(self.successResultOf(lost), str)
        self.assertEqual(self.failure(first.kill_session(first.session_id), RPCError).tag, "invalid-value")

    def test_unsupported_operation_is_rpc_error(self):
        session = self.connect()
        error = self.failure(session.rpc(b'<frobnicate xmlns="urn:x"/>'), RPCError)
        self.assertEqual((error.type, error.tag), ("protocol", "operation-not-supported"))
        self.assertIn("frobnicate", error.message)


class SimpleOperationBytesTests(TestCase):
    """Operations without filters go out as bytes built once: the same XML as the element path."""

    def test_same_xml_as_building_the_elements(self):
        from callhome_mux.netconf.operations import _op, _simple_op, datastore

        cases = [
            (("get",), _op("get")),
            (("get-config", ("source", "running")), _op("get-config", datastore("running", "source"))),
            (("get-config", ("source", "candidate")), _op("get-config", datastore("candidate", "source"))),
            (("get-config", ("source", "file:///x.xml")), _op("get-config", datastore("file:///x.xml", "source"))),
            (("lock", ("target", "running")), _op("lock", datastore("running", "target"))),
            (("unlock", ("target", "candidate")), _op("unlock", datastore("candidate", "target"))),
            (("discard-changes",), _op("discard-changes")),
        ]
        for args, element in cases:
            self.assertEqual(_simple_op(*args), etree.tostring(element))
            self.assertIs(_simple_op(*args), _simple_op(*args))

    def test_bad_datastore_name_still_refused(self):
        from callhome_mux.netconf.operations import _simple_op

        for _ in range(2):
            self.assertRaises(ValueError, _simple_op, "lock", ("target", "not a name"))

    def test_sessions_send_them(self):
        clock = task.Clock()
        device = NetconfServerProtocol(Datastore(), clock=clock)
        client = NetconfClientProtocol(clock=clock)
        pump = connect_in_memory(device, client)
        pump.flush()
        session = self.successResultOf(client.whenReady())
        data = session.get_config()
        locked = session.lock()
        pump.flush()
        self.assertEqual(self.successResultOf(data).tag, qn("data"))
        self.assertIsNotNone(self.successResultOf(locked).find(qn("ok")))
