"""XML namespaces and capability URIs used by NETCONF (client and test device)."""

BASE_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NOTIFICATION_NS = "urn:ietf:params:xml:ns:netconf:notification:1.0"
MONITORING_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
WITH_DEFAULTS_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"

BASE_1_0 = "urn:ietf:params:netconf:base:1.0"
BASE_1_1 = "urn:ietf:params:netconf:base:1.1"
_CAP = "urn:ietf:params:netconf:capability:"
CANDIDATE = _CAP + "candidate:1.0"
CONFIRMED_COMMIT_1_0 = _CAP + "confirmed-commit:1.0"
CONFIRMED_COMMIT_1_1 = _CAP + "confirmed-commit:1.1"
VALIDATE_1_1 = _CAP + "validate:1.1"
STARTUP = _CAP + "startup:1.0"
XPATH = _CAP + "xpath:1.0"
NOTIFICATION = _CAP + "notification:1.0"
INTERLEAVE = _CAP + "interleave:1.0"
WITH_DEFAULTS = _CAP + "with-defaults:1.0"
MONITORING = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"


def qn(local: str, ns: str = BASE_NS) -> str:
    """Clark notation C{{ns}local}, the form lxml uses for tags."""
    return f"{{{ns}}}{local}"


HELLO = qn("hello")
RPC = qn("rpc")
RPC_REPLY = qn("rpc-reply")
RPC_ERROR = qn("rpc-error")
OK = qn("ok")
DATA = qn("data")
NOTIFICATION_TAG = qn("notification", NOTIFICATION_NS)
