"""
callhome-mux: one TCP port for every kind of RFC 8071 call home.

Devices dial in; callhome-mux tells SSH from TLS from a silent TLS device by
the first bytes, runs the management side of the session, and hands the
application a NETCONF or RESTCONF session.
"""

__version__ = "0.1.0"
