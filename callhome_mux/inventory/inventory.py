"""
The inventory: which devices may call home, what we decided about callers
we do not know, and what every device did lately — kept across restarts.

It owns the shared L{DeviceDirectory} (SSH and TLS look devices up there
synchronously) and replaces its contents after every change.  Everything
the hot path needs (L{Inventory.identify}, L{Inventory.decide_unknown},
L{Inventory.is_throttled}) is answered from memory; the database is written
behind, and every method that changes something returns a Deferred that
fires once the change is committed to disk.

Configuration and runtime devices: the configuration file owns the ids it
defines (they are re-applied on every start and reload, and cannot be
changed through the API); runtime changes (the API, approvals) own every
other id and are stored in the database.  When the configuration starts
defining an id that was a runtime device, the configuration wins and the
runtime entry is deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.logger import Logger

from callhome_mux.events import EventBus
from callhome_mux.frozen import FrozenDict
from callhome_mux.inventory import state as states
from callhome_mux.inventory.identity import (
    ACCEPT,
    DENIED,
    DISABLED,
    PENDING,
    REJECT,
    SSH_HOST_KEY,
    THROTTLED,
    Decision,
    Identity,
    PendingDevice,
)
from callhome_mux.inventory.model import Credentials, Device, DeviceDirectory
from callhome_mux.inventory.settings import InventorySettings
from callhome_mux.inventory.state import DeviceState, new_state
from callhome_mux.inventory.store import InventoryStore, Snapshot
from callhome_mux.inventory.throttle import BackOff, Throttle
from callhome_mux.settings import ConfigError

_log = Logger(namespace="callhome_mux.inventory")

CONFIG = "config"
RUNTIME = "runtime"


@dataclass(frozen=True)
class ConfigChanges:
    """What L{Inventory.apply_config} changed, by device id."""

    added: Tuple[str, ...] = ()
    changed: Tuple[str, ...] = ()
    removed: Tuple[str, ...] = ()

    @property
    def affected(self) -> Tuple[str, ...]:
        """Devices whose sessions should be dropped: changed or removed."""
        return self.changed + self.removed


def address_host(peer: Optional[str]) -> Optional[str]:
    """The host part of C{host:port} / C{[v6]:port}: the unit of address throttling."""
    if not peer or peer == "?":
        return None
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    if peer.count(":") == 1:
        return peer.rsplit(":", 1)[0]
    return peer  # a bare host, or a bare IPv6 address


def _device_key(device_id: str) -> str:
    return "device:" + device_id


def _text_identity_key(identity: str) -> str:
    """The throttle key of an identity given as text: a fingerprint, or a device id."""
    if identity[:7].lower() == "sha256:":
        return identity
    return "device:" + identity


class Inventory:
    def __init__(
        self,
        settings: InventorySettings,
        store: InventoryStore,
        events: EventBus,
        directory: Optional[DeviceDirectory] = None,
        clock=None,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings
        self.store = store
        self.events = events
        self.directory = directory if directory is not None else DeviceDirectory()
        self.clock = clock
        self._config: Dict[str, Device] = {}
        self._runtime: Dict[str, Device] = {}
        self._states: Dict[str, DeviceState] = {}
        self._pending: Dict[int, PendingDevice] = {}
        self._pending_by_key: Dict[Tuple[str, str], int] = {}
        self._next_pending_id = 1
        self._dirty_counts: set = set()
        self._full_rejections = 0
        self._count_flush = None
        self._identity_throttle = Throttle(
            BackOff(settings.throttle_failures, settings.throttle_base_delay, settings.throttle_max_delay),
            clock, settings.throttle_max_tracked, lambda key, n, delay: self._throttled("identity", key, n, delay),
        )
        self._address_throttle = Throttle(
            BackOff(
                settings.address_throttle_failures, settings.address_throttle_base_delay,
                settings.address_throttle_max_delay,
            ),
            clock, settings.throttle_max_tracked, lambda key, n, delay: self._throttled("address", key, n, delay),
        )
        self._pruner: Optional[task.LoopingCall] = None
        self._registry = None
        self._observed: List[Any] = []
        self._close_waiters: Optional[List[defer.Deferred]] = []
        #: The session whose details the last session.up wrote (so that the
        #: connected observer does not merge the same details again).
        self._details_written_for = None
        store.on_buffered_failure = lambda reason: self._store_failed(reason, "writing state and history")

    # -- life cycle -------------------------------------------------------

    @classmethod
    @defer.inlineCallbacks
    def open(
        cls,
        settings: InventorySettings,
        state_directory: str,
        events: EventBus,
        directory: Optional[DeviceDirectory] = None,
        clock=None,
        config_devices: Iterable[Device] = (),
        observe: bool = True,
    ):
        """
        Open (or create, or migrate) the database in C{state_directory},
        load it, apply C{config_devices}, and fire with the inventory.

        With C{observe} the inventory follows C{events} (state, history,
        throttling); L{close} stops that.
        """
        path = settings.database
        if not os.path.isabs(path):
            path = os.path.join(state_directory, path)
        store = yield InventoryStore.open(
            path, settings.history_max_events, clock=clock, write_behind=settings.state_write_delay
        )
        try:
            snapshot = yield store.load()
            inventory = cls(settings, store, events, directory, clock)
            inventory._restore(snapshot)
            yield inventory.apply_config(config_devices)
        except BaseException:
            yield store.close()
            raise
        if observe:
            inventory.observe(events)
        inventory._start_pruning()
        return inventory

    def close(self) -> defer.Deferred:
        """Stop timers and observers, write what is buffered, close the database.  Idempotent."""
        waiter: defer.Deferred = defer.Deferred()
        if self._close_waiters is None:
            waiter.callback(None)  # closed already
            return waiter
        self._close_waiters.append(waiter)
        if len(self._close_waiters) > 1:
            return waiter  # closing already
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        for bus in self._observed:
            bus.removeObserver(self._on_event)
        self._observed = []

        def closed(result):
            waiters, self._close_waiters = self._close_waiters, None
            for each in waiters:
                each.callback(None)

        flushed = self._flush_counts()
        flushed.addBoth(lambda _: self.store.close()).addBoth(closed)
        return waiter

    def _restore(self, snapshot: Snapshot) -> None:
        self._runtime = {device.id: device for device in snapshot.devices}
        for device_id, why in snapshot.unreadable:
            self.events.emit("inventory.device.unreadable", device_id=device_id, reason=why)
        self._states = dict(snapshot.states)
        # No session survives a restart: whatever was live is now disconnected.
        now = self.clock.seconds()
        for device_id, current in list(self._states.items()):
            if current.state in (states.CONNECTING, states.AUTHENTICATING, states.CONNECTED):
                self._states[device_id] = current.moved(states.DISCONNECTED, "callhome-mux restarted", now)
                self.store.save_state(self._states[device_id]).addErrback(self._store_failed, "restoring state")
        for entry in snapshot.pending:
            self._pending[entry.id] = entry
            self._pending_by_key[entry.key] = entry.id
        self._next_pending_id = max(self._pending, default=0) + 1
        self.directory.replace(self._merged())

    # -- devices ----------------------------------------------------------

    def devices(self) -> List[Device]:
        return self.directory.all()

    def get(self, device_id: str) -> Optional[Device]:
        return self.directory.get(device_id)

    def source(self, device_id: str) -> Optional[str]:
        """C{config}, C{runtime}, or C{None} for an unknown id."""
        if device_id in self._config:
            return CONFIG
        if device_id in self._runtime:
            return RUNTIME
        return None

    def add_device(self, device: Device) -> defer.Deferred:
        """Add a runtime device; fails with ConfigError if the id or an identity is taken."""
        if self.source(device.id) is not None:
            return defer.fail(ConfigError(f"device {device.id!r} already exists", "id"))
        return self._put_runtime(device, "inventory.device.added")

    def update_device(self, device: Device) -> defer.Deferred:
        """Replace runtime device C{device.id} as a whole."""
        refused = self._refuse_unless_runtime(device.id)
        if refused is not None:
            return refused
        return self._put_runtime(device, "inventory.device.updated")

    def set_enabled(self, device_id: str, enabled: bool) -> defer.Deferred:
        refused = self._refuse_unless_runtime(device_id)
        if refused is not None:
            return refused
        device = dataclasses.replace(self._runtime[device_id], enabled=enabled)
        return self._put_runtime(device, "inventory.device.enabled" if enabled else "inventory.device.disabled")

    def remove_device(self, device_id: str) -> defer.Deferred:
        refused = self._refuse_unless_runtime(device_id)
        if refused is not None:
            return refused
        previous = self._runtime.pop(device_id)
        self.directory.replace(self._merged())
        self._states.pop(device_id, None)
        self.events.emit("inventory.device.removed", device_id=device_id, source=RUNTIME)
        d = self.store.delete_device(device_id)
        self.store.delete_state(device_id).addErrback(self._store_failed, "forgetting a removed device's state")

        def failed(reason):
            if device_id not in self._runtime and device_id not in self._config:
                self._runtime[device_id] = previous
                self.directory.replace(self._merged())
            return reason

        return d.addCallbacks(lambda _: None, failed)

    def _refuse_unless_runtime(self, device_id: str) -> Optional[defer.Deferred]:
        where = self.source(device_id)
        if where == CONFIG:
            return defer.fail(
                ConfigError(f"device {device_id!r} is defined in the configuration file; change it there", "id")
            )
        if where is None:
            return defer.fail(KeyError(device_id))
        return None

    def _put_runtime(self, device: Device, event: str) -> defer.Deferred:
        # Memory first, so the next handshake (and the next API call's
        # checks) see the change at once; undone if the commit fails.
        previous = self._runtime.get(device.id)
        self._runtime[device.id] = device
        try:
            self.directory.replace(self._merged())
        except ConfigError as error:
            self._restore_runtime(device.id, previous)
            return defer.fail(error)
        self.events.emit(event, **_device_fields(device, RUNTIME))
        d = self.store.save_device(device, self.clock.seconds())

        def failed(reason):
            if self._runtime.get(device.id) is device:
                self._restore_runtime(device.id, previous)
            return reason

        return d.addCallbacks(lambda _: device, failed)

    def _restore_runtime(self, device_id: str, previous: Optional[Device]) -> None:
        if previous is None:
            self._runtime.pop(device_id, None)
        else:
            self._runtime[device_id] = previous
        self.directory.replace(self._merged())

    def _merged(self) -> List[Device]:
        merged = dict(self._config)
        for device_id, device in self._runtime.items():
            merged.setdefault(device_id, device)
        return list(merged.values())

    # -- configuration ----------------------------------------------------

    def apply_config(self, devices: Iterable[Device]) -> defer.Deferred:
        """
        Make C{devices} the configuration's devices (start, reload).

        Fires with L{ConfigChanges} over the effective device set: the
        service keeps the sessions of devices not in C{changes.affected}.
        A conflict (two devices claiming one host key or certificate) fails
        with ConfigError and changes nothing.
        """
        config: Dict[str, Device] = {}
        for device in devices:
            if device.id in config:
                return defer.fail(ConfigError(f"device id {device.id!r} appears twice", "devices"))
            config[device.id] = device
        try:
            DeviceDirectory(list(config.values()))  # conflicts within the file itself
        except ConfigError as error:
            return defer.fail(error)
        before = {device.id: device for device in self._merged()}
        self._config = config
        # The configuration owns the ids it defines and the host keys and
        # certificates it names: a runtime device in the way goes (else an
        # operator who moves an approved device into the file could not
        # start the server to remove the runtime entry).
        configured = {identity: device.id for device in config.values() for identity in _identities(device)}
        writes = []
        for device_id in sorted(self._runtime):
            device = self._runtime[device_id]
            if device_id in config:
                why = "now defined in the configuration file"
            else:
                owners = sorted({configured[i] for i in _identities(device) if i in configured})
                if not owners:
                    continue
                why = f"its host key or certificate is now configured for {', '.join(owners)}"
            del self._runtime[device_id]
            self.events.emit("inventory.device.superseded", device_id=device_id, reason=why)
            writes.append(self.store.delete_device(device_id))
        self.directory.replace(self._merged())
        after = {device.id: device for device in self._merged()}
        changes = ConfigChanges(
            added=tuple(sorted(set(after) - set(before))),
            changed=tuple(sorted(i for i in set(after) & set(before) if after[i] != before[i])),
            removed=tuple(sorted(set(before) - set(after))),
        )
        for device_id in changes.removed:
            self._states.pop(device_id, None)
            writes.append(self.store.delete_state(device_id))
        if changes.added or changes.changed or changes.removed:
            self.events.emit(
                "inventory.config.applied",
                added=list(changes.added), changed=list(changes.changed), removed=list(changes.removed),
            )
        d = defer.gatherResults(writes, consumeErrors=True) if writes else defer.succeed(None)
        return d.addCallback(lambda _: changes)

    # -- callers: the synchronous hooks for the SSH and TLS layers ---------

    def identify(self, identity: Identity) -> Decision:
        """
        Everything the handshake needs in one synchronous call: C{accept}
        (with the device), C{disabled}, C{throttled}, or for an unknown
        identity whatever L{decide_unknown} says.
        """
        throttled = self.is_throttled(identity=identity, address=identity.address)
        if throttled is not None:
            return Decision(THROTTLED, throttled)
        if identity.kind == SSH_HOST_KEY:
            device = self.directory.by_ssh_fingerprint(identity.fingerprint)
        else:
            device = self.directory.by_tls_fingerprint(identity.fingerprint)
        if device is None:
            return self.decide_unknown(identity)
        if not device.enabled:
            return Decision(DISABLED, f"device {device.id!r} is disabled", device=device)
        return Decision(ACCEPT, f"{identity.kind} matches device {device.id!r}", device=device)

    def decide_unknown(self, identity: Identity) -> Decision:
        """
        What to do with a caller whose identity matches no device.  Never
        C{accept}: only an operator's approval makes a device trusted.

        A denied identity costs a set lookup and a counter; a pending one
        the same (counters are written in batches); only a new identity
        under the C{pending} policy is written at once (C{Decision.recorded}).
        """
        pending_id = self._pending_by_key.get(identity.key)
        entry = self._pending.get(pending_id) if pending_id is not None else None
        if entry is not None and entry.status == DENIED:
            self._count(entry, identity)
            return Decision(DENIED, "an operator denied this identity", pending_id=entry.id)
        if self.settings.unknown_device_policy != PENDING:
            return Decision(REJECT, "unknown device (unknown_device_policy is reject)")
        if entry is not None:
            self._count(entry, identity)
            return Decision(PENDING, "unknown device, waiting for an operator's approval", pending_id=entry.id)
        if len(self._pending) >= self.settings.max_pending:
            self._full_rejections += 1
            reason = f"unknown device, and {self.settings.max_pending} are already waiting for approval"
            if _is_power_of_two(self._full_rejections):
                # A flood of fresh identities: reported at 1, 2, 4, 8 ... rejections.
                self.events.emit("inventory.attempt.refused", reason=reason, rejections=self._full_rejections, **identity.fields())
            return Decision(REJECT, reason)
        now = self.clock.seconds()
        entry = PendingDevice(
            id=self._next_pending_id, kind=identity.kind, fingerprint=identity.fingerprint,
            subject=identity.subject, claimed_device_id=identity.claimed_device_id,
            address=identity.address, first_seen=now, last_seen=now, count=1, status=PENDING,
            verified=identity.verified,
        )
        self._next_pending_id += 1
        self._pending[entry.id] = entry
        self._pending_by_key[entry.key] = entry.id
        self.events.emit("inventory.device.pending", **entry.fields())
        recorded = self.store.save_pending(entry).addCallback(lambda _: entry)
        recorded.addErrback(self._store_failed, "recording a pending device")
        return Decision(PENDING, "unknown device, recorded for an operator's approval", pending_id=entry.id, recorded=recorded)

    def _count(self, entry: PendingDevice, identity: Identity) -> None:
        updated = dataclasses.replace(
            entry, count=entry.count + 1, last_seen=self.clock.seconds(), address=identity.address or entry.address
        )
        self._pending[entry.id] = updated
        self._dirty_counts.add(entry.id)
        if updated.status == DENIED and _is_power_of_two(updated.count):
            # Reported at 1, 2, 4, 8 ... attempts: a flood cannot flood the log.
            self.events.emit(
                "inventory.attempt.refused", reason="denied by an operator", **updated.fields()
            )
        if self._count_flush is None:
            self._count_flush = self.clock.callLater(self.settings.count_flush_interval, self._flush_counts)

    def _flush_counts(self) -> defer.Deferred:
        if self._count_flush is not None and self._count_flush.active():
            self._count_flush.cancel()
        self._count_flush = None
        rows = []
        for pending_id in sorted(self._dirty_counts):
            entry = self._pending.get(pending_id)
            if entry is not None:
                rows.append((entry.id, entry.count, entry.last_seen, entry.address))
        self._dirty_counts.clear()
        if not rows:
            return defer.succeed(None)
        return self.store.save_pending_counts(rows).addErrback(self._store_failed, "saving attempt counters")

    # -- pending devices: the operator's side -------------------------------

    def pending(self) -> List[PendingDevice]:
        """Pending and denied entries, oldest first."""
        return [self._pending[i] for i in sorted(self._pending)]

    def approve(
        self,
        pending_id: int,
        device_id: Optional[str] = None,
        credentials: Optional[Credentials] = None,
        labels: Optional[Dict[str, str]] = None,
    ) -> defer.Deferred:
        """
        Make pending entry C{pending_id} a runtime device; its next call
        home is accepted.  Only the fingerprint is pinned; the entry's
        claimed id and address are not trusted (C{device_id} defaults to a
        name made from the fingerprint, not to the claim).
        """
        entry = self._pending.get(pending_id)
        if entry is None:
            return defer.fail(KeyError(pending_id))
        device_id = device_id or _default_device_id(entry)
        if self.source(device_id) is not None:
            return defer.fail(ConfigError(f"device {device_id!r} already exists", "id"))
        identities = {"ssh_host_keys": (entry.fingerprint,)} if entry.kind == SSH_HOST_KEY else {"tls_fingerprints": (entry.fingerprint,)}
        try:
            device = Device(id=device_id, credentials=credentials or Credentials(), labels=dict(labels or {}), **identities)
        except ConfigError as error:
            return defer.fail(error)
        self._runtime[device.id] = device
        try:
            self.directory.replace(self._merged())
        except ConfigError as error:
            self._restore_runtime(device.id, None)
            return defer.fail(error)
        self._forget_pending(entry)
        self.events.emit("inventory.device.approved", **entry.fields(), device_id=device.id)
        d = self.store.approve(entry.id, device, self.clock.seconds())

        def failed(reason):
            if self._runtime.get(device.id) is device:
                self._restore_runtime(device.id, None)
                self._pending[entry.id] = entry
                self._pending_by_key[entry.key] = entry.id
            return reason

        return d.addCallbacks(lambda _: device, failed)

    def deny(self, pending_id: int) -> defer.Deferred:
        """Refuse this identity from now on, cheaply; fires with the entry."""
        entry = self._pending.get(pending_id)
        if entry is None:
            return defer.fail(KeyError(pending_id))
        denied = dataclasses.replace(entry, status=DENIED)
        self._pending[pending_id] = denied
        self._dirty_counts.discard(pending_id)  # the full row is written now
        self.events.emit("inventory.device.denied", **denied.fields())

        def failed(reason):
            current = self._pending.get(pending_id)
            if current is not None and current.status == DENIED:
                self._pending[pending_id] = dataclasses.replace(current, status=entry.status)
            return reason

        return self.store.save_pending(denied).addCallbacks(lambda _: denied, failed)

    def forget(self, pending_id: int) -> defer.Deferred:
        """Drop a pending or denied entry (a denied identity may then ask again)."""
        entry = self._pending.get(pending_id)
        if entry is None:
            return defer.fail(KeyError(pending_id))
        self._forget_pending(entry)
        self.events.emit("inventory.device.forgotten", **entry.fields())
        return self.store.delete_pending(pending_id)

    def _forget_pending(self, entry: PendingDevice) -> None:
        self._pending.pop(entry.id, None)
        self._dirty_counts.discard(entry.id)
        if self._pending_by_key.get(entry.key) == entry.id:
            del self._pending_by_key[entry.key]

    # -- throttling -------------------------------------------------------

    def is_throttled(self, identity: Any = None, address: Optional[str] = None) -> Optional[str]:
        """
        Why this caller must wait, or C{None}.  C{identity}: an
        L{Identity}, a device id, or a fingerprint; C{address}: a host or
        C{host:port}.  Synchronous and cheap: for every connection.
        """
        if not self._identity_throttle and not self._address_throttle:
            # Nobody has failed (the usual case): no key to look up.  The
            # identity is still checked, as _identity_keys would.
            if identity is None or isinstance(identity, (str, Identity)):
                return None
        for key in self._identity_keys(identity):
            remaining = self._identity_throttle.remaining(key)
            if remaining:
                return f"{key} failed {self._identity_throttle.failures(key)} times; retry in {remaining:.0f}s"
        host = address_host(address)
        if host is not None:
            remaining = self._address_throttle.remaining(host)
            if remaining:
                return f"address {host} failed {self._address_throttle.failures(host)} times; retry in {remaining:.0f}s"
        return None

    def record_failure(self, identity: Any = None, address: Optional[str] = None) -> None:
        """Count a failed call (the event observer does this for mapped events)."""
        for key in self._identity_keys(identity):
            self._identity_throttle.failed(key)
        host = address_host(address)
        if host is not None:
            self._address_throttle.failed(host)

    def record_success(self, identity: Any = None, address: Optional[str] = None) -> None:
        for key in self._identity_keys(identity):
            self._identity_throttle.succeeded(key)
        host = address_host(address)
        if host is not None:
            self._address_throttle.succeeded(host)

    def _identity_keys(self, identity: Any) -> List[str]:
        if identity is None:
            return []
        if isinstance(identity, Identity):
            keys = [identity.fingerprint]
            lookup = self.directory.by_ssh_fingerprint if identity.kind == SSH_HOST_KEY else self.directory.by_tls_fingerprint
            device = lookup(identity.fingerprint)
            if device is not None:
                keys.append(_device_key(device.id))
            return keys
        if isinstance(identity, str):
            return [_text_identity_key(identity)]
        raise TypeError(f"identity must be an Identity, a device id or a fingerprint, not {type(identity).__name__}")

    def _throttled(self, kind: str, key: str, failures: int, delay: float) -> None:
        fields: Dict[str, Any] = {"throttle": kind, "failures": failures, "delay": delay}
        if key.startswith("device:"):
            fields["device_id"] = key[len("device:"):]
        elif kind == "address":
            fields["address"] = key
        else:
            fields["fingerprint"] = key
        self.events.emit("inventory.throttled", **fields)

    # -- state and history ------------------------------------------------

    def state(self, device_id: str) -> DeviceState:
        return self._states.get(device_id) or DeviceState(device_id)

    def states(self) -> Dict[str, DeviceState]:
        """Every known device's state (never-seen included)."""
        return {device.id: self.state(device.id) for device in self.directory.all()}

    def set_state(
        self,
        device_id: str,
        state: str,
        reason: Optional[str] = None,
        address: Optional[str] = None,
        transport: Optional[str] = None,
        details: Optional[Dict[str, Any]] = None,
    ) -> defer.Deferred:
        """Move a device to C{state} (explicitly; events do the same); fires after the commit."""
        if state not in states.STATES:
            return defer.fail(ValueError(f"unknown state {state!r}"))
        if state == states.FAILED and reason not in states.FAILURE_REASONS:
            return defer.fail(ValueError(f"a failure needs one of {', '.join(states.FAILURE_REASONS)}"))
        return self.store.save_state(self._move(device_id, state, reason, address, transport, details))

    def _move(self, device_id: str, state: str, reason, address, transport, details, current=None,
              now=None) -> DeviceState:
        if now is None:
            now = self.clock.seconds()
        if current is None:
            current = self.state(device_id)
        if details is not None:
            details = _plain(details)
        elif (state == states.CONNECTED and current.state != states.CONNECTED) or current is _NEVER_SEEN:
            details = {}  # a new session: the old one's details are stale
        else:
            details = current.details
        # DeviceState.moved, without building keyword arguments per call.
        new = new_state(
            device_id,
            state,
            reason,
            current.since if state == current.state and reason == current.reason else now,
            now,
            address or current.last_address,
            transport or current.transport,
            details,
        )
        self._states[device_id] = new
        return new

    def session_details(self, device_id: str, details: Dict[str, Any]) -> defer.Deferred:
        """Merge what a session negotiated (algorithms, capabilities, yang-library) into the state."""
        return self._merge_details(device_id, details, buffered=False)

    def _merge_details(self, device_id: str, details: Dict[str, Any], buffered: bool) -> Optional[defer.Deferred]:
        current = self.state(device_id)
        merged = dict(current.details)
        merged.update(_plain(details))
        if merged == current.details:
            # Already written (with the session.up state): wait for that write.
            return self.store.flush()
        new = dataclasses.replace(current, details=merged)
        self._states[device_id] = new
        if buffered:
            self.store.buffer_state(new)
            return None
        return self.store.save_state(new)

    def record_event(self, device_id: str, event: str, **fields: Any) -> defer.Deferred:
        """Append to C{device_id}'s history (count retention applies at once)."""
        return self.store.append_history(device_id, self.clock.seconds(), event, _plain(fields))

    def history(self, device_id: str, limit: int = 100) -> defer.Deferred:
        """Newest first."""
        return self.store.history(device_id, limit)

    def flush(self) -> defer.Deferred:
        """Write buffered attempt counters; fires when everything queued so far is committed."""
        self._flush_counts()
        return self.store.flush()

    def prune(self) -> defer.Deferred:
        """
        Age retention now; fires with the number of events removed.  Also
        deletes the capability and algorithm sets no state names any more.
        """
        pruned = self.store.prune_history(self.clock.seconds() - self.settings.history_max_age)
        self.store.collect_capability_sets().addErrback(self._store_failed, "collecting unused capability sets")
        self.store.collect_algorithm_sets().addErrback(self._store_failed, "collecting unused algorithm sets")
        return pruned

    def _start_pruning(self) -> None:
        self._pruner = task.LoopingCall(self._prune_quietly)
        self._pruner.clock = self.clock
        self._pruner.start(self.settings.prune_interval, now=True)

    def _prune_quietly(self) -> None:
        # Not returned to LoopingCall: a slow prune must not delay the next
        # tick's scheduling, and a failed one must not stop the loop.
        self.prune().addErrback(self._store_failed, "pruning history")

    # -- following the event bus -------------------------------------------

    def observe(self, events: EventBus) -> None:
        # Most events mean nothing to the inventory: the bus skips their names.
        events.addObserver(self._on_event, wants=_wanted)
        self._observed.append(events)

    def watch_sessions(self, registry) -> None:
        """Keep each session's details (algorithms, capabilities) in its device's state."""
        # session.up is emitted once the session is registered: its details
        # then go into the same write as the state (see _on_event).
        self._registry = registry
        registry.addConnectedObserver(self._session_connected)

    def _session_connected(self, session) -> None:
        if self._details_written_for is session:
            # session.up just wrote these very details with the state.
            self._details_written_for = None
            return
        self._merge_details(session.device_id, dict(session.details), buffered=True)

    def _on_event(self, event: Dict[str, Any]) -> None:
        name = event.get("event", "")
        # Every event of every layer comes here; most mean nothing to the
        # inventory: one lookup decides.
        plan = _PLANS.get(name, _MISSING)
        if plan is _MISSING:
            plan = _event_plan(name, event.get("reason"))
        if plan is None:
            return
        mapped, proven = plan
        device_id = event.get("device_id")
        peer = event.get("peer")
        state = reason = None
        if mapped is not None:
            state, reason = mapped
            if state == states.FAILED:
                identity = (
                    [key for key in (event.get("fingerprint"), device_id) if isinstance(key, str) and key]
                    if proven
                    else []
                )
                # A failure a proven device can be held to counts against
                # that device only: behind a NAT, one device's broken
                # configuration must not lock its neighbours out.  The
                # address takes what nobody could be held to.
                for key in identity:
                    self._identity_throttle.failed(_text_identity_key(key))
                if not identity:
                    self.record_failure(address=peer)
            elif state == states.CONNECTED:
                # record_success, without its per-call key lists; nothing
                # to clear while no key has failed (the usual case).
                if proven and self._identity_throttle:
                    succeeded = self._identity_throttle.succeeded
                    for key in (event.get("fingerprint"), device_id):
                        if isinstance(key, str) and key:
                            succeeded(_text_identity_key(key))
                if self._address_throttle:
                    host = address_host(peer)
                    if host is not None:
                        self._address_throttle.succeeded(host)
        # State and history only for known devices: an unknown id in an
        # event (or a flood of them) writes nothing.
        if not isinstance(device_id, str) or self.directory.get(device_id) is None:
            return
        # A copy without the three keys the row has columns for (a copy and
        # three deletions: a third of a filtering comprehension's cost).
        fields = event.copy()
        del fields["device_id"]
        fields.pop("event", None)
        fields.pop("time", None)
        # Copied again only when a value is not plain already (most events'
        # are all text and numbers); the check inline, not in a call.
        for value in fields.values():
            if type(value) not in _KEPT_TYPES:
                fields = _plain(fields)
                break
        now = self.clock.seconds()
        self.store.buffer_history(device_id, now, name, fields)
        if mapped is None or not proven:
            return
        current = self._states.get(device_id)
        if current is None:
            current = _NEVER_SEEN  # no DeviceState built just to be replaced
        if state == states.DISCONNECTED:
            reason = event.get("reason")
            if current.state == states.CONNECTED and peer and current.last_address and peer != current.last_address:
                # The end of a session that a newer one (from another
                # address/port) replaced: the device is still connected.
                return
        details = None
        if state == states.CONNECTED and self._registry is not None:
            session = self._registry.get(device_id)
            if session is not None:
                details = session.details  # _move makes the JSON-able copy
                self._details_written_for = session
        # Two events that leave the state as it was (host key accepted,
        # then authenticated) cost one write, not two: only last_seen
        # would move, and the next write carries it.
        if (
            details is None
            and current.state == state
            and current.reason == reason
            and (peer is None or peer == current.last_address)
        ):
            return
        self.store.buffer_state(
            self._move(device_id, state, reason, peer, event.get("transport"), details, current, now)
        )

    def _store_failed(self, reason, doing: str) -> None:
        _log.failure("inventory store failed while {doing}", reason, doing=doing)
        self.events.emit("inventory.store.failed", reason=f"{doing}: {reason.getErrorMessage()}")


_MISSING = object()
#: The state of every device not seen yet, for the observer (which only
#: reads it; its id is not the device's, see _move).
_NEVER_SEEN = DeviceState("")
#: event name -> None (ignored) or (mapped state or None, proven), for the
#: names whose C{reason} refines nothing.
_PLANS: Dict[str, Any] = {}


def _event_plan(name: str, reason: Any):
    mapped = states.state_for_event(name, reason)
    if mapped is None and name not in states.HISTORY_ONLY:
        plan = None
    else:
        plan = (mapped, name not in states.UNPROVEN_EVENTS)
    if name not in states.REFINED_EVENTS and len(_PLANS) < 4096:
        _PLANS[name] = plan
    return plan


def _wanted(name: str) -> bool:
    """Whether events called C{name} can change a state or reach a history (asked once per name)."""
    return name in states.REFINED_EVENTS or _event_plan(name, None) is not None


def _device_fields(device: Device, source: str) -> Dict[str, Any]:
    # Never the credentials themselves: only who we log in as.
    return {
        "device_id": device.id,
        "source": source,
        "enabled": device.enabled,
        "protocol": device.protocol,
        "username": device.credentials.username,
        "ssh_host_keys": len(device.ssh_host_keys),
        "tls_fingerprints": list(device.tls_fingerprints),
    }


def _identities(device: Device) -> set:
    from callhome_mux.inventory.model import ssh_key_fingerprint_from_text

    found = {("ssh", ssh_key_fingerprint_from_text(key)) for key in device.ssh_host_keys}
    found.update(("tls", fingerprint) for fingerprint in device.tls_fingerprints)
    return found


def _default_device_id(entry: PendingDevice) -> str:
    digest = hashlib.sha256(entry.fingerprint.encode("ascii")).hexdigest()[:12]
    return f"{'ssh' if entry.kind == SSH_HOST_KEY else 'tls'}-{digest}"


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


_SCALARS = (str, int, float, bool, type(None))
#: Values kept as they are in a JSON-able copy: scalars, and FrozenDicts
#: (text keys and scalars that cannot change, such as the SSH layer's
#: shared algorithms: every state of a fleet keeps that one object, and
#: the store encodes and writes it once, see detail_sets).  A set: a hash
#: look-up, where a tuple compares an int with str before it finds int.
_KEPT_TYPES = frozenset(_SCALARS + (FrozenDict,))


# Devices of one model report the same capability list: their states share
# one JSON-able copy (and its JSON, see detail_sets) instead of each
# holding its own.  Keyed by the session's (shared, immutable) tuple.
_SHARED_LISTS: Dict[tuple, list] = {}
_SHARED_LISTS_MAX = 256
_SHARED_MIN_LENGTH = 8


_SHARED_BY_ID: Dict[int, Tuple[tuple, list]] = {}


def _shared_list(value: tuple) -> list:
    # By identity first: sessions pass the very same shared tuple, and
    # hashing 70 strings per state write is what this saves.
    known = _SHARED_BY_ID.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    shared = _SHARED_LISTS.get(value)
    if shared is None:
        shared = [_plain(v) for v in value]
        if len(_SHARED_LISTS) >= _SHARED_LISTS_MAX:
            _SHARED_LISTS.clear()
            _SHARED_BY_ID.clear()
        _SHARED_LISTS[value] = shared
    if len(_SHARED_BY_ID) >= _SHARED_LISTS_MAX:
        _SHARED_BY_ID.clear()
    _SHARED_BY_ID[id(value)] = (value, shared)
    return shared


def _plain(value: Any) -> Any:
    """JSON-able copy: tuples to lists, bytes and other objects to text."""
    if type(value) in _KEPT_TYPES:
        return value
    scalars = _KEPT_TYPES
    if type(value) is dict:
        # A copy in C, then only the values that are not plain already
        # converted in place (session details: two of fourteen); a third
        # cheaper than the comprehension below.  Replacing the value of a
        # key does not disturb the iteration.
        copy = value.copy()
        for k, v in copy.items():
            if type(k) is not str:
                break  # keys to convert: the general way
            if type(v) not in scalars:
                copy[k] = _plain(v)
        else:
            return copy
    if isinstance(value, dict):
        # Most values (session details: text and numbers) are plain
        # already: no call for them.
        return {
            (k if type(k) is str else str(k)): (v if type(v) in scalars else _plain(v)) for k, v in value.items()
        }
    if type(value) is tuple and len(value) >= _SHARED_MIN_LENGTH:
        return _shared_list(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
