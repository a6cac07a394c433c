"""
Prometheus metrics, fed from the event bus and read from the registry at
scrape time.

Each API service has its own C{CollectorRegistry}, so two services in one
process (tests, embedders) never collide, and nothing lands in the global
registry.  Label values are bounded sets (connection kinds, outcomes,
failure reasons from L{callhome_mux.inventory.state}), never device ids or
free text: a scan of random garbage cannot create new time series, and no
metric tells a label-limited token about devices it cannot see.
"""

from __future__ import annotations

from typing import Any, Dict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from callhome_mux.inventory import state as states

#: Seconds: the demultiplexer decides within its classify timeout (seconds).
CLASSIFY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRANSPORTS = ("netconf-ssh", "netconf-tls", "restconf")
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def rejection_category(reason: Any) -> str:
    """A bounded label for the demultiplexer's free-text rejection reasons."""
    text = str(reason or "").lower()
    if "closed by the peer" in text:
        return "peer-closed"
    if "timeout" in text or "timed out" in text or "within" in text:
        return "timeout"
    if "limit" in text or "too many" in text:
        return "admission-limit"
    if "proxy" in text:
        return "proxy-header"
    return "unrecognised"


class Metrics:
    """The API's metrics; C{observe} is an EventBus observer."""

    def __init__(self, callhome_service=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._service = callhome_service
        r = self.registry
        self.connections = Counter(
            "callhome_connections", "Connections by classified kind and outcome.", ["kind", "outcome"], registry=r
        )
        self.classification = Histogram(
            "callhome_classification_seconds", "Time from accept to classification.", ["kind"],
            buckets=CLASSIFY_BUCKETS, registry=r,
        )
        self.failures = Counter(
            "callhome_failures", "Failed calls home and refused connections, by reason.", ["reason"], registry=r
        )
        self.sessions_opened = Counter(
            "callhome_sessions_opened", "Sessions that came up, by transport.", ["transport"], registry=r
        )
        self.sessions_lost = Counter(
            "callhome_sessions_lost", "Sessions that ended, by transport.", ["transport"], registry=r
        )
        self.rpcs = Counter(
            "callhome_api_rpcs", "NETCONF RPCs and RESTCONF requests made through the API, by outcome.",
            ["protocol", "outcome"], registry=r,
        )
        self.rpc_latency = Histogram(
            "callhome_api_rpc_seconds", "Latency of RPCs and RESTCONF requests made through the API.",
            ["protocol"], buckets=RPC_BUCKETS, registry=r,
        )
        self.api_requests = Counter(
            "callhome_api_requests", "API requests by method and status class.", ["method", "status"], registry=r
        )
        self.event_clients = Gauge("callhome_api_event_clients", "Connected event-stream clients.", registry=r)
        self.event_clients_dropped = Counter(
            "callhome_api_event_clients_dropped", "Event-stream clients cut off for not reading.", registry=r
        )
        if callhome_service is not None:
            r.register(_LiveCollector(callhome_service))
        # Labelled children by kind, for the two per-connection updates:
        # prometheus_client's labels() takes a lock and builds its key on
        # every call.
        self._classified: Dict[str, Any] = {}
        # The same, by transport, for session.up and session.lost.
        self._opened: Dict[Any, Any] = {}
        self._lost: Dict[Any, Any] = {}

    def observe(self, event: Dict[str, Any]) -> None:
        name = event.get("event", "")
        if name == "connection.classified":
            kind = event.get("kind") or "unknown"
            children = self._classified.get(kind)
            if children is None:
                kind = str(kind)
                children = (self.connections.labels(kind, "classified"), self.classification.labels(kind))
                if len(self._classified) < 64:
                    self._classified[kind] = children
            children[0].inc()
            ms = event.get("ms")
            if isinstance(ms, (int, float)):
                children[1].observe(ms / 1000.0)
        elif name == "connection.rejected":
            self.connections.labels("none", "rejected").inc()
            self.failures.labels("rejected-" + rejection_category(event.get("reason"))).inc()
        elif name == "session.up":
            self._child(self._opened, self.sessions_opened, event.get("transport")).inc()
        elif name == "session.lost":
            self._child(self._lost, self.sessions_lost, event.get("transport")).inc()
        else:
            mapped = states.state_for_event(name, event.get("reason"))
            if mapped is not None and mapped[0] == states.FAILED and mapped[1]:
                self.failures.labels(mapped[1]).inc()

    @staticmethod
    def _child(cache: Dict[Any, Any], metric, transport: Any):
        child = cache.get(transport)
        if child is None:
            child = metric.labels(str(transport or "unknown"))
            if len(cache) < 64 and type(transport) in (str, type(None)):
                cache[transport] = child
        return child

    def rpc_done(self, protocol: str, outcome: str, seconds: float) -> None:
        self.rpcs.labels(protocol, outcome).inc()
        self.rpc_latency.labels(protocol).observe(max(0.0, seconds))


class _LiveCollector:
    """Gauges read at scrape time: always right, nothing to keep in step."""

    def __init__(self, service):
        self._service = service

    def describe(self):
        return []

    def collect(self):
        up = GaugeMetricFamily("callhome_sessions_up", "Sessions up now, by transport.", labels=["transport"])
        # Every transport, zero included: a gauge that vanishes at zero breaks alerts.
        counts: Dict[str, int] = {transport: 0 for transport in TRANSPORTS}
        for session in self._service.registry.sessions():
            transport = str((getattr(session, "details", None) or {}).get("transport") or "unknown")
            counts[transport] = counts.get(transport, 0) + 1
        for transport, count in sorted(counts.items()):
            up.add_metric([transport], count)
        yield up
        inventory = getattr(self._service, "inventory", None)
        devices = GaugeMetricFamily("callhome_devices", "Known devices by state.", labels=["state"])
        pending = GaugeMetricFamily("callhome_pending_devices", "Unknown callers waiting for approval or denied.", labels=["status"])
        if inventory is not None:
            by_state = {name: 0 for name in states.STATES}
            for current in inventory.states().values():
                by_state[current.state] = by_state.get(current.state, 0) + 1
            for name, count in by_state.items():
                devices.add_metric([name], count)
            by_status = {"pending": 0, "denied": 0}
            for entry in inventory.pending():
                by_status[entry.status] = by_status.get(entry.status, 0) + 1
            for name, count in by_status.items():
                pending.add_metric([name], count)
        yield devices
        yield pending
