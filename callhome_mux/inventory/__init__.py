"""
callhome_mux.inventory: the devices that may call home, trust decisions
about those we do not know, and per-device state and history, kept in
SQLite across restarts.

  - L{model}: Device, Credentials, DeviceDirectory (shared with SSH/TLS)
  - L{config}: C{[[devices]]} tables -> Device
  - L{settings}: InventorySettings (C{[inventory]})
  - L{inventory}: Inventory, the facade the service uses
  - L{identity}: Identity / Decision, the synchronous handshake hooks
  - L{store}, L{schema}: the database and its migrations
  - L{state}, L{throttle}: state from events; exponential back-off
"""
