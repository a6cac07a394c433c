# twistd plugin for callhome-mux.  This directory must not have an
# __init__.py: Twisted finds plugins by scanning twisted/plugins.
from twisted.application.service import ServiceMaker

callhome_mux = ServiceMaker(
    "callhome-mux",
    "callhome_mux.plugin",
    "One-port RFC 8071 call-home server: NETCONF over SSH and TLS, RESTCONF",
    "callhome-mux",
)
