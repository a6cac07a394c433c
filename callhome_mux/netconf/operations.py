"""
The RFC 6241 / 5277 / 6022 / 6243 operations as methods building RPCs.

L{NetconfOperations} is mixed into the session; it needs only C{rpc()},
C{has_capability()} and C{_subscribe()}.  Bad arguments (an unknown
test-option, say) raise C{ValueError} at once: they are bugs in the caller.
A capability the device lacks is a fact about the device, so it comes back
as a failed Deferred (L{CapabilityError}), like every other device answer.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, Optional, Tuple, Union

from lxml import etree
from twisted.internet import defer

from callhome_mux.netconf import xmlsafe
from callhome_mux.netconf.errors import CapabilityError
from callhome_mux.netconf.namespaces import (
    BASE_NS,
    CONFIRMED_COMMIT_1_0,
    CONFIRMED_COMMIT_1_1,
    DATA,
    MONITORING_NS,
    NOTIFICATION_NS,
    WITH_DEFAULTS_NS,
    qn,
)

__all__ = ["NetconfOperations", "SubtreeFilter", "XPathFilter", "build_filter", "content_elements"]

WITH_DEFAULTS_MODES = ("report-all", "report-all-tagged", "trim", "explicit")
DEFAULT_OPERATIONS = ("merge", "replace", "none")
TEST_OPTIONS = ("test-then-set", "set", "test-only")
ERROR_OPTIONS = ("stop-on-error", "continue-on-error", "rollback-on-error")


class SubtreeFilter:
    """An RFC 6241 §6 subtree filter: element(s), or their XML text."""

    def __init__(self, content):
        self.content = content


class XPathFilter:
    """An XPath filter (needs :xpath); C{namespaces} maps the prefixes C{select} uses."""

    def __init__(self, select: str, namespaces: Optional[Dict[str, str]] = None):
        self.select = select
        self.namespaces = dict(namespaces or {})


FilterSpec = Union[None, SubtreeFilter, XPathFilter, Any]


def content_elements(content) -> list:
    """Elements from an element, a list of them, or XML text (several top-level elements allowed)."""
    if content is None:
        return []
    if isinstance(content, (str, bytes)):
        return xmlsafe.parse_fragment(content)
    if isinstance(content, etree._Element):
        return [content]
    return [element for item in content for element in content_elements(item)]


def config_content(config) -> list:
    """
    The elements that go inside <config>.  A single <config> root, with no
    namespace or NETCONF's (what ncclient users write), is unwrapped rather
    than nested inside ours.
    """
    elements = content_elements(config)
    if len(elements) == 1:
        name = etree.QName(elements[0])
        if name.localname == "config" and name.namespace in (None, BASE_NS):
            return list(elements[0])
    return elements


def _source(source):
    """<source>: a datastore name or URL, or config content (element(s) or XML text)."""
    if isinstance(source, str) and not source.lstrip().startswith("<"):
        return datastore(source, "source")
    element = etree.Element(qn("source"))
    config = etree.SubElement(element, qn("config"))
    for child in config_content(source):
        config.append(_copy(child))
    return element


def build_filter(spec: FilterSpec, tag: str = qn("filter")):
    """
    A <filter> element from C{spec}: None, a L{SubtreeFilter}, an
    L{XPathFilter}, a ready <filter> element, C{("subtree", content)},
    C{("xpath", select)}, or bare subtree content (element or XML text).
    """
    if spec is None:
        return None
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] in ("subtree", "xpath"):
        spec = SubtreeFilter(spec[1]) if spec[0] == "subtree" else XPathFilter(spec[1])
    if isinstance(spec, XPathFilter):
        nsmap = {prefix: uri for prefix, uri in spec.namespaces.items() if prefix}
        element = etree.Element(tag, nsmap=nsmap or None)
        element.set("type", "xpath")
        element.set("select", spec.select)
        return element
    if isinstance(spec, etree._Element) and etree.QName(spec).localname == "filter":
        return spec
    content = spec.content if isinstance(spec, SubtreeFilter) else spec
    element = etree.Element(tag)
    element.set("type", "subtree")
    for child in content_elements(content):
        element.append(_copy(child))
    return element


def _copy(element):
    # Appending moves an lxml element; callers keep theirs.
    from copy import deepcopy

    return deepcopy(element)


def datastore(name: str, tag: str):
    """<tag><running/></tag>, or <tag><url>...</url></tag> for a URL."""
    holder = etree.Element(qn(tag))
    if "://" in name:
        etree.SubElement(holder, qn("url")).text = name
    else:
        etree.SubElement(holder, qn(name))
    return holder


def _op(name: str, *children):
    element = etree.Element(qn(name), nsmap={None: BASE_NS})
    for child in children:
        if child is not None:
            element.append(child)
    return element


@functools.lru_cache(maxsize=256)
def _simple_op(name: str, *datastores: Tuple[str, str]) -> bytes:
    """
    C{<name>} whose only children are datastores (C{(tag, name)} pairs),
    serialised: the same bytes every time, so built once (building and
    serialising the elements costs several microseconds per RPC).
    """
    return etree.tostring(_op(name, *(datastore(value, tag) for tag, value in datastores)))


def _leaf(name: str, value, ns: str = BASE_NS):
    element = etree.Element(qn(name, ns))
    element.text = str(value)
    return element


def _with_defaults(mode: Optional[str]):
    if mode is None:
        return None
    _check_choice("with_defaults", mode, WITH_DEFAULTS_MODES)
    element = etree.Element(qn("with-defaults", WITH_DEFAULTS_NS), nsmap={None: WITH_DEFAULTS_NS})
    element.text = mode
    return element


def _check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _date_time(value) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("start_time/stop_time need a timezone (RFC 5277 uses date-and-time with offset)")
        return value.isoformat()
    return str(value)


def _data_of(reply):
    data = reply.find(DATA)
    return data if data is not None else etree.Element(DATA)


class NetconfOperations:
    """The standard operations; every method returns a Deferred."""

    # -- reading ----------------------------------------------------------

    def get(self, filter: FilterSpec = None, with_defaults: Optional[str] = None, timeout=None) -> defer.Deferred:
        """<get>: fires with the <data> element (config and state)."""
        if filter is None and with_defaults is None:
            request = _simple_op("get")
        else:
            request = _op("get", build_filter(filter), _with_defaults(with_defaults))
        return self.rpc(request, timeout).addCallback(_data_of)

    def get_config(
        self, source: str = "running", filter: FilterSpec = None, with_defaults: Optional[str] = None, timeout=None
    ) -> defer.Deferred:
        """<get-config>: fires with the <data> element."""
        if filter is None and with_defaults is None:
            request = _simple_op("get-config", ("source", source))
        else:
            request = _op("get-config", datastore(source, "source"), build_filter(filter), _with_defaults(with_defaults))
        return self.rpc(request, timeout).addCallback(_data_of)

    def get_schema(self, identifier: str, version: Optional[str] = None, format: str = "yang", timeout=None):
        """RFC 6022 <get-schema>: fires with the schema text."""
        request = etree.Element(qn("get-schema", MONITORING_NS), nsmap={None: MONITORING_NS})
        request.append(_leaf("identifier", identifier, MONITORING_NS))
        if version is not None:
            request.append(_leaf("version", version, MONITORING_NS))
        if format is not None:
            request.append(_leaf("format", format, MONITORING_NS))

        def schema_text(reply):
            data = reply.find(qn("data", MONITORING_NS))
            if data is None:
                data = reply.find(DATA)
            return "" if data is None else "".join(data.itertext())

        return self.rpc(request, timeout).addCallback(schema_text)

    # -- changing ---------------------------------------------------------

    def edit_config(
        self,
        config,
        target: str = "running",
        default_operation: Optional[str] = None,
        test_option: Optional[str] = None,
        error_option: Optional[str] = None,
        timeout=None,
    ) -> defer.Deferred:
        """<edit-config> with C{config} (element(s) or XML text: the content of <config>)."""
        children = [datastore(target, "target")]
        if default_operation is not None:
            _check_choice("default_operation", default_operation, DEFAULT_OPERATIONS)
            children.append(_leaf("default-operation", default_operation))
        if test_option is not None:
            _check_choice("test_option", test_option, TEST_OPTIONS)
            children.append(_leaf("test-option", test_option))
        if error_option is not None:
            _check_choice("error_option", error_option, ERROR_OPTIONS)
            children.append(_leaf("error-option", error_option))
        holder = etree.Element(qn("config"))
        for element in config_content(config):
            holder.append(_copy(element))
        children.append(holder)
        return self.rpc(_op("edit-config", *children), timeout)

    def copy_config(self, target: str, source, timeout=None) -> defer.Deferred:
        """<copy-config>: C{source} is a datastore name, a URL, or config content."""
        source_element = _source(source)
        return self.rpc(_op("copy-config", datastore(target, "target"), source_element), timeout)

    def delete_config(self, target: str, timeout=None) -> defer.Deferred:
        return self.rpc(_op("delete-config", datastore(target, "target")), timeout)

    def lock(self, target: str = "running", timeout=None) -> defer.Deferred:
        return self.rpc(_simple_op("lock", ("target", target)), timeout)

    def unlock(self, target: str = "running", timeout=None) -> defer.Deferred:
        return self.rpc(_simple_op("unlock", ("target", target)), timeout)

    def validate(self, source="candidate", timeout=None) -> defer.Deferred:
        """<validate> a datastore (name or URL) or config content."""
        source_element = _source(source)
        return self.rpc(_op("validate", source_element), timeout)

    def commit(
        self,
        confirmed: bool = False,
        confirm_timeout: Optional[int] = None,
        persist: Optional[str] = None,
        persist_id: Optional[str] = None,
        timeout=None,
    ) -> defer.Deferred:
        """
        <commit>; a confirmed commit (RFC 6241 §8.4) when C{confirmed}.

        Confirmed commits need :confirmed-commit (C{persist}/C{persist_id}
        need its 1.1 version); without it the Deferred fails with
        L{CapabilityError} and nothing is sent.
        """
        if (confirm_timeout is not None or persist is not None) and not confirmed:
            raise ValueError("confirm_timeout and persist only apply to a confirmed commit (confirmed=True)")
        if confirm_timeout is not None and int(confirm_timeout) < 1:
            raise ValueError(f"confirm_timeout must be at least 1 second, got {confirm_timeout!r}")
        if confirmed or persist_id is not None:
            if not (self.has_capability(CONFIRMED_COMMIT_1_1) or self.has_capability(CONFIRMED_COMMIT_1_0)):
                return defer.fail(
                    CapabilityError(
                        "the device does not advertise :confirmed-commit; refusing to send a confirmed commit"
                        " (a plain commit would not roll back)"
                    )
                )
            if (persist is not None or persist_id is not None) and not self.has_capability(CONFIRMED_COMMIT_1_1):
                return defer.fail(CapabilityError("persist/persist-id need :confirmed-commit:1.1, which the device lacks"))
        children = []
        if confirmed:
            children.append(etree.Element(qn("confirmed")))
            if confirm_timeout is not None:
                children.append(_leaf("confirm-timeout", int(confirm_timeout)))
            if persist is not None:
                children.append(_leaf("persist", persist))
        if persist_id is not None:
            children.append(_leaf("persist-id", persist_id))
        return self.rpc(_op("commit", *children), timeout)

    def cancel_commit(self, persist_id: Optional[str] = None, timeout=None) -> defer.Deferred:
        """<cancel-commit> (needs :confirmed-commit:1.1)."""
        if not self.has_capability(CONFIRMED_COMMIT_1_1):
            return defer.fail(CapabilityError("<cancel-commit> needs :confirmed-commit:1.1, which the device lacks"))
        children = [] if persist_id is None else [_leaf("persist-id", persist_id)]
        return self.rpc(_op("cancel-commit", *children), timeout)

    def discard_changes(self, timeout=None) -> defer.Deferred:
        return self.rpc(_simple_op("discard-changes"), timeout)

    # -- sessions ---------------------------------------------------------

    def kill_session(self, session_id: int, timeout=None) -> defer.Deferred:
        return self.rpc(_op("kill-session", _leaf("session-id", int(session_id))), timeout)

    # -- notifications ----------------------------------------------------

    def create_subscription(
        self,
        callback: Callable[[Any], None],
        stream: Optional[str] = None,
        filter: FilterSpec = None,
        start_time=None,
        stop_time=None,
        timeout=None,
    ) -> defer.Deferred:
        """
        RFC 5277 <create-subscription>; fires with the reply.

        From then on every <notification> element goes to C{callback}, in
        the order it arrives.  The callback is installed before the request
        is sent so nothing that follows the reply is missed; it is removed
        again if the device refuses.
        """
        request = etree.Element(qn("create-subscription", NOTIFICATION_NS), nsmap={None: NOTIFICATION_NS})
        if stream is not None:
            request.append(_leaf("stream", stream, NOTIFICATION_NS))
        if filter is not None:
            request.append(build_filter(filter, qn("filter", NOTIFICATION_NS)))
        if start_time is not None:
            request.append(_leaf("startTime", _date_time(start_time), NOTIFICATION_NS))
        if stop_time is not None:
            if start_time is None:
                raise ValueError("stop_time needs start_time (RFC 5277 §2.1.1)")
            request.append(_leaf("stopTime", _date_time(stop_time), NOTIFICATION_NS))
        self._subscribe(callback)

        def refused(failure):
            self._subscribe(None)
            return failure

        return self.rpc(request, timeout).addErrback(refused)
