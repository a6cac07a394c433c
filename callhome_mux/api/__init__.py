"""
callhome_mux.api: the northbound HTTP API (devices, pending callers,
sessions, NETCONF and RESTCONF through the server, live events, metrics).

  - L{settings}: APISettings (C{[api]})
  - L{service}: make_api_service, APIService
  - L{tokens}: bearer tokens, roles, label limits
  - L{routing}: routes, authentication, JSON errors
  - L{devices}, L{device_io}, L{admin}: the handlers
  - L{events}: Server-Sent Events with bounded per-client queues
  - L{metrics}: Prometheus metrics from the event bus
"""

from callhome_mux.api.settings import APISettings


def make_api_service(callhome_service, settings=None, reactor=None):
    from callhome_mux.api.service import make_api_service as make

    return make(callhome_service, settings, reactor)


__all__ = ["APISettings", "make_api_service"]
