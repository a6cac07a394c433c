"""
callhome_mux.restconf: the RESTCONF client (RFC 8040) over the connection a device opened.

The TLS handler's entry point is L{callhome_mux.restconf.session.restconf_protocol};
see docs/restconf.rst.  Nothing is imported here, so that reading the
settings (L{callhome_mux.restconf.settings}) does not pull in the client.
"""
