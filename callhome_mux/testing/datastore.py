"""
A small XML datastore for the test device: subtree filtering and edit-config.

Without YANG there is no schema to say which element is a list entry, so
list entries are recognised by a key leaf: the first child leaf named one of
C{KEY_NAMES} (C{name}, C{id}, ...).  Two elements are "the same node" when
their tags match and, for list entries, their keys match.  That is enough
for simulators and tests; it is not a NETCONF server's data model.
"""

from __future__ import annotations

import copy
import itertools
from typing import Dict, Iterable, List, Optional, Tuple

from lxml import etree

from callhome_mux.netconf import xmlsafe
from callhome_mux.netconf.namespaces import BASE_NS, DATA, qn

KEY_NAMES = ("name", "id", "key", "index")
OPERATION = qn("operation")


class EditError(Exception):
    """An edit-config failure, reported as an <rpc-error> with C{tag}."""

    def __init__(self, tag: str, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.tag = tag
        self.message = message
        self.path = path


# -- node identity --------------------------------------------------------


def _is_leaf(element) -> bool:
    return len(element) == 0


def _key(element) -> Tuple:
    for child in element:
        if _is_leaf(child) and etree.QName(child).localname in KEY_NAMES:
            return (element.tag, child.tag, (child.text or "").strip())
    return (element.tag,)


def find_same(parent, element):
    """The child of C{parent} that is the same node as C{element}, or None."""
    key = _key(element)
    for child in parent:
        if child.tag == element.tag and _key(child) == key:
            return child
    return None


def _path(element) -> str:
    return "/" + "/".join(etree.QName(e).localname for e in reversed(list(element.iterancestors())) if e.tag != DATA) + (
        "/" + etree.QName(element).localname
    )


# -- subtree filtering (RFC 6241 §6) ---------------------------------------


def _is_content_match(node) -> bool:
    return _is_leaf(node) and bool((node.text or "").strip())


def _filter_node(filter_node, data_node):
    """The filtered copy of C{data_node} (which matches C{filter_node}'s name), or None."""
    children = [c for c in filter_node if isinstance(c.tag, str)]
    if not children:
        return copy.deepcopy(data_node)  # selection node: the whole subtree
    content = [c for c in children if _is_content_match(c)]
    others = [c for c in children if not _is_content_match(c)]
    matched = []
    for condition in content:
        wanted = condition.text.strip()
        hits = [d for d in data_node if d.tag == condition.tag and (d.text or "").strip() == wanted]
        if not hits:
            return None  # a false content match drops the whole sibling set
        matched.extend(hits)
    if not others:
        return copy.deepcopy(data_node)  # only content matches: everything below
    result = etree.Element(data_node.tag, data_node.attrib, nsmap=data_node.nsmap)
    selected = False
    for child in data_node:
        if child in matched:
            result.append(copy.deepcopy(child))
            continue
        for condition in others:
            if condition.tag == child.tag:
                filtered = _filter_node(condition, child)
                if filtered is not None:
                    result.append(filtered)
                    selected = True
                    break
    return result if selected or content else None


def subtree_filter(filter_elements: Iterable, data_root) -> List:
    """The top-level elements of C{data_root} selected by the filter's top-level elements."""
    filters = [f for f in filter_elements if isinstance(f.tag, str)]
    selected = []
    for node in data_root:
        for condition in filters:
            if condition.tag == node.tag:
                filtered = _filter_node(condition, node)
                if filtered is not None:
                    selected.append(filtered)
                    break
    return selected


# -- edit-config ----------------------------------------------------------


def normalise(element):
    """Drop whitespace-only text between elements (pretty-printing), in place; returns C{element}."""
    for node in element.iter():
        if len(node) and node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    return element


def _clean(element):
    """A copy of C{element} without nc:operation attributes or layout whitespace."""
    duplicate = normalise(copy.deepcopy(element))
    for node in duplicate.iter():
        if isinstance(node.tag, str):
            node.attrib.pop(OPERATION, None)
    return duplicate


def apply_edit(target, config: Iterable, default_operation: str = "merge") -> None:
    """Apply <config> children to C{target} in place; L{EditError} on failure."""
    for element in config:
        if isinstance(element.tag, str):
            _edit(target, element, default_operation)


def _edit(parent, element, inherited: str) -> None:
    operation = element.get(OPERATION, inherited)
    if operation not in ("merge", "replace", "create", "delete", "remove", "none"):
        raise EditError("bad-attribute", f"unknown operation {operation!r}", _path(element))
    existing = find_same(parent, element)
    if operation in ("delete", "remove"):
        if existing is None:
            if operation == "delete":
                raise EditError("data-missing", "cannot delete a node that does not exist", _path(element))
            return
        parent.remove(existing)
    elif operation == "create" and existing is not None:
        raise EditError("data-exists", "cannot create a node that already exists", _path(element))
    elif operation in ("create", "replace"):
        replacement = _clean(element)
        if existing is None:
            parent.append(replacement)
        else:
            parent.replace(existing, replacement)
    elif _is_leaf(element):
        if operation == "none":
            if existing is None:
                raise EditError("data-missing", "no such node (default-operation none)", _path(element))
            return
        if existing is None:
            parent.append(_clean(element))
        else:
            existing.text = element.text
    else:  # merge or none into a container or list entry
        created = existing is None
        if created:
            existing = etree.SubElement(parent, element.tag, {k: v for k, v in element.attrib.items() if k != OPERATION})
        for child in element:
            if isinstance(child.tag, str):
                _edit(existing, child, operation)
        if created and operation == "none" and len(existing) == 0:
            parent.remove(existing)


# -- the shared datastore -------------------------------------------------


class Datastore:
    """
    Configuration shared by every session of one simulated device.

    @param running: initial configuration (XML text or elements: the
        content of <data>).
    @param candidate: whether the device has a candidate datastore.
    @param state: operational data that <get> adds to the configuration.
    @param schemas: C{{identifier: text}} or C{{(identifier, version): text}}
        for <get-schema>.
    """

    def __init__(self, running=None, candidate: bool = False, state=None, schemas: Optional[Dict] = None):
        self.running = self._data(running)
        self.candidate = copy.deepcopy(self.running) if candidate else None
        self.state = self._data(state)
        self.schemas = dict(schemas or {})
        #: datastore name -> session-id holding its lock
        self.locks: Dict[str, int] = {}
        #: session-id -> live server protocol (for kill-session)
        self.sessions: Dict[int, object] = {}
        self._session_ids = itertools.count(1)
        #: A confirmed commit waiting for confirmation: (previous running, timer).
        self.pending_confirm = None

    @staticmethod
    def _data(content):
        root = etree.Element(DATA, nsmap={None: BASE_NS})
        if content is None:
            return root
        elements = xmlsafe.parse_fragment(content) if isinstance(content, (str, bytes)) else list(content)
        for element in elements:
            root.append(normalise(copy.deepcopy(element)))
        return root

    def new_session_id(self) -> int:
        return next(self._session_ids)

    def get(self, name: str):
        if name == "running":
            return self.running
        if name == "candidate" and self.candidate is not None:
            return self.candidate
        return None

    def put(self, name: str, root) -> None:
        if name == "running":
            self.running = root
        else:
            self.candidate = root

    def release_locks(self, session_id: int) -> None:
        for name in [n for n, holder in self.locks.items() if holder == session_id]:
            del self.locks[name]
