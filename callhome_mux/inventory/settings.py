"""
Settings of the device inventory (section C{[inventory]}).

Durations are seconds unless the name says otherwise; the history age is in
days because that is how people think about retention.
"""

from __future__ import annotations

from dataclasses import dataclass

from callhome_mux.settings import ConfigError, at_least, positive

#: What happens when a device we do not know proves an identity.
UNKNOWN_DEVICE_POLICIES = ("reject", "pending")


@dataclass(frozen=True)
class InventorySettings:
    #: C{reject}: refuse and forget.  C{pending}: refuse, but record the
    #: attempt so an operator can approve (or deny) the device.
    unknown_device_policy: str = "reject"
    #: Most pending entries kept at once; beyond it new unknown identities
    #: are rejected without a record (a flood of fresh keys must not fill
    #: the disk).
    max_pending: int = 1000

    #: History kept per device: at most this many events ...
    history_max_events: int = 1000
    #: ... and none older than this many days.
    history_max_age_days: float = 30.0
    #: How often the age-based prune runs.
    prune_interval: float = 3600.0

    #: Failures in a row before an identity or address is throttled.
    throttle_failures: int = 5
    #: First back-off; it doubles with each further failure ...
    throttle_base_delay: float = 2.0
    #: ... up to this.
    throttle_max_delay: float = 600.0
    #: Same three for an address (several devices may share one behind NAT,
    #: so by default it takes more failures to throttle an address).
    address_throttle_failures: int = 20
    address_throttle_base_delay: float = 2.0
    address_throttle_max_delay: float = 300.0
    #: Most addresses/identities tracked for throttling; the stalest are
    #: forgotten first, so a scan from many addresses cannot exhaust memory.
    throttle_max_tracked: int = 100000

    #: Attempt counters of pending and denied identities are written in
    #: batches at most this often (no database write per attempt).
    count_flush_interval: float = 5.0

    #: State changes and history rows that events report are written
    #: together, at most this long after they happened (group commit: one
    #: transaction for a whole call-home storm's rows, not one per event).
    #: 0 writes each at once.  Devices, pending entries and API changes are
    #: always written before they are acknowledged.
    state_write_delay: float = 0.5

    #: Database file: relative names are in the state directory.
    database: str = "inventory.sqlite3"

    def __post_init__(self):
        if self.unknown_device_policy not in UNKNOWN_DEVICE_POLICIES:
            raise ConfigError(
                f"must be one of {', '.join(UNKNOWN_DEVICE_POLICIES)}, got {self.unknown_device_policy!r}",
                "unknown_device_policy",
            )
        at_least(self.max_pending, 0, "max_pending")
        at_least(self.history_max_events, 1, "history_max_events")
        positive(self.history_max_age_days, "history_max_age_days")
        positive(self.prune_interval, "prune_interval")
        at_least(self.throttle_failures, 1, "throttle_failures")
        at_least(self.address_throttle_failures, 1, "address_throttle_failures")
        for key in ("throttle_base_delay", "throttle_max_delay", "address_throttle_base_delay", "address_throttle_max_delay"):
            positive(getattr(self, key), key)
        if self.throttle_max_delay < self.throttle_base_delay:
            raise ConfigError("must not be less than throttle_base_delay", "throttle_max_delay")
        if self.address_throttle_max_delay < self.address_throttle_base_delay:
            raise ConfigError("must not be less than address_throttle_base_delay", "address_throttle_max_delay")
        at_least(self.throttle_max_tracked, 1, "throttle_max_tracked")
        positive(self.count_flush_interval, "count_flush_interval")
        at_least(self.state_write_delay, 0.0, "state_write_delay")
        if not self.database:
            raise ConfigError("must name a file", "database")

    @property
    def history_max_age(self) -> float:
        """Retention age in seconds."""
        return self.history_max_age_days * 86400.0
