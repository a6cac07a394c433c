"""
The twistd command line: C{twistd -n callhome-mux [options]}.

Kept inside the package (the file in twisted/plugins only points here) so
that it is importable, testable and documented like the rest.
"""

from __future__ import annotations

from twisted.python import usage

from callhome_mux.config import Config, load_config
from callhome_mux.service import CallHomeService
from callhome_mux.settings import ConfigError


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve RFC 8071 call home (NETCONF over SSH and TLS, RESTCONF) on one port. "
        "With no options: listen on tcp:4334 in automatic mode, keep state in "
        "./callhome-mux-state. The command line wins over the configuration file."
    )
    optParameters = [
        ["config", "c", None, "TOML configuration file."],
        ["state-dir", "d", None, "State directory (created with mode 0700; default ./callhome-mux-state)."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self["set"] = []
        self.config: Config | None = None

    def opt_listen(self, value: str) -> None:
        """Listener, repeatable: ENDPOINT or MODE[+proxy]@ENDPOINT (modes: auto, ssh, netconf-tls, restconf, tls, tls-client), e.g. tcp:4334, ssh@tcp:4334, auto+proxy@tcp6:port=4334:interface=\\:\\:."""
        self["listen"].append(value)

    opt_l = opt_listen

    def opt_set(self, value: str) -> None:
        """Set one setting, repeatable: SECTION.KEY=VALUE (VALUE in TOML syntax), e.g. demux.silence_timeout=2.5."""
        self["set"].append(value)

    def postOptions(self) -> None:
        try:
            self.config = load_config(
                path=self["config"], listen=self["listen"], state_dir=self["state-dir"], overrides=self["set"]
            )
        except ConfigError as error:
            raise usage.UsageError(f"bad configuration: {error}") from None


def makeService(options: Options) -> CallHomeService:
    def reload_same_command_line() -> Config:
        return load_config(
            path=options["config"], listen=options["listen"], state_dir=options["state-dir"], overrides=options["set"]
        )

    service = CallHomeService(options.config, config_loader=reload_same_command_line)
    # The HTTP API is part of the server twistd runs (loopback only until
    # configured otherwise); embedders add it if they want it.
    from callhome_mux.api import make_api_service

    make_api_service(service, options.config.api).setServiceParent(service)
    service.stop_reactor_on_start_failure = True
    from twisted.internet import reactor

    # After the reactor has installed its own handlers.
    reactor.callWhenRunning(service.installSignalHandlers)
    return service
