"""
The command-line client of a running callhome-mux: C{callhome-mux COMMAND}.

    callhome-mux devices [--state S] [--label k=v]
    callhome-mux show DEVICE
    callhome-mux pending | approve PENDING_ID [--id NEW_ID] | deny PENDING_ID
    callhome-mux sessions | close DEVICE
    callhome-mux rpc DEVICE [FILE|-] | rpc DEVICE --get-config [--source S] [--filter X] | rpc DEVICE --get
    callhome-mux restconf DEVICE GET /data/...
    callhome-mux events [--follow [--subscribe]] [--device D] [--kind PREFIX]
    callhome-mux tokens list | tokens add --role R [--labels k=v,...] | tokens remove ID

It finds the local server by itself: the server writes its API address
(C{api-address}) and, on first start, an admin token (C{api-token}) into
its state directory (C{./callhome-mux-state}, or C{--state-dir}).
C{--url} and C{--token} (or C{CALLHOME_MUX_URL}, C{CALLHOME_MUX_TOKEN})
override them.  Output is tables for people, C{--json} for scripts; any
error is one line on stderr and a non-zero exit status.

A short-lived tool: plain C{urllib} from the standard library, no reactor.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

DEFAULT_STATE_DIR = "callhome-mux-state"
V1 = "/api/v1"


class CLIError(Exception):
    """Something the user should read: one line, then exit status 1."""


# -- finding the server ------------------------------------------------------


def _read_first_line(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip() or None
    except FileNotFoundError:
        return None
    except OSError as error:
        raise CLIError(f"cannot read {path}: {error.strerror}") from None


def locate(args) -> Tuple[str, str]:
    """(base URL, token) from the options, the environment, or the state directory."""
    state_dir = args.state_dir or os.environ.get("CALLHOME_MUX_STATE_DIR") or DEFAULT_STATE_DIR
    url = args.url or os.environ.get("CALLHOME_MUX_URL")
    if not url:
        url = _read_first_line(os.path.join(state_dir, "api-address"))
        if not url:
            raise CLIError(
                f"no API address in {os.path.join(state_dir, 'api-address')}: is the server running"
                " (twistd -n callhome-mux)? Give --state-dir or --url"
            )
    token = args.token or os.environ.get("CALLHOME_MUX_TOKEN")
    if not token:
        token = _read_first_line(os.path.join(state_dir, "api-token"))
        if not token:
            raise CLIError(f"no token: give --token, or run where {os.path.join(state_dir, 'api-token')} is readable")
    return url.rstrip("/"), token


# -- HTTP --------------------------------------------------------------------


class Client:
    def __init__(self, url: str, token: str, timeout: float = 120.0, cafile: Optional[str] = None):
        self.url = url
        self.token = token
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None

    def open(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
             timeout: Optional[float] = None):
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout, context=self.context)
        except urllib.error.HTTPError as error:
            return error  # a response too: status, headers, body
        except urllib.error.URLError as error:
            reason = getattr(error.reason, "strerror", None) or str(error.reason)
            raise CLIError(f"cannot reach the API at {self.url}: {reason}") from None
        except (OSError, ValueError) as error:
            raise CLIError(f"cannot reach the API at {self.url}: {error}") from None

    def call(self, method: str, path: str, body: Any = None, raw: Optional[bytes] = None,
             headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        headers = dict(headers or {})
        if body is not None:
            raw = json.dumps(body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
        response = self.open(method, path, raw, headers)
        with response:
            data = response.read()
            return response.status, dict(response.headers.items()), data

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, headers, data = self.call(method, path, body)
        if status >= 400:
            raise CLIError(error_line(status, data))
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise CLIError(f"the server answered {status} with something that is not JSON") from None


def error_line(status: int, data: bytes) -> str:
    """One line from an API error document (or a bare status)."""
    try:
        error = json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        text = data.decode("utf-8", "replace").strip().splitlines()
        return f"HTTP {status}" + (f": {text[0][:200]}" if text else "")
    line = f"{error.get('message', 'error')} (HTTP {status})"
    items = error.get("rpc_errors") or []
    if items:
        first = items[0]
        line += f" [{first.get('error-type')}/{first.get('error-tag')}" + (
            f": {first.get('error-message')}" if first.get("error-message") else ""
        ) + "]" + (f" and {len(items) - 1} more" if len(items) > 1 else "")
    return line


# -- output --------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def table(rows: Iterable[Sequence[Any]], headings: Sequence[str]) -> None:
    rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headings]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
    for row in [list(headings), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def when(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + "Z"


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


def labels_text(labels: Dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def parse_labels(items: Sequence[str]) -> Dict[str, str]:
    labels = {}
    for item in items or ():
        for part in item.split(","):
            key, equals, value = part.partition("=")
            if not equals or not key:
                raise CLIError(f"labels are key=value, got {part!r}")
            labels[key] = value
    return labels


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# -- commands ------------------------------------------------------------------


def cmd_devices(client: Client, args) -> None:
    query = [("state", state) for state in args.state or ()] + [("label", label) for label in args.label or ()]
    result = client.json("GET", f"{V1}/devices" + ("?" + urllib.parse.urlencode(query) if query else ""))
    if args.json:
        return print_json(result)
    table(
        (
            (d["id"], d.get("state", {}).get("state"), when(d.get("state", {}).get("since")),
             d.get("state", {}).get("transport") or d.get("protocol") or "-",
             d.get("state", {}).get("last_address") or "-", labels_text(d.get("labels")),
             "" if d.get("enabled", True) else "disabled")
            for d in result["devices"]
        ),
        ("DEVICE", "STATE", "SINCE", "TRANSPORT", "ADDRESS", "LABELS", ""),
    )


def cmd_show(client: Client, args) -> None:
    device = client.json("GET", f"{V1}/devices/{quote(args.device)}")
    if args.json:
        return print_json(device)
    state = device.get("state") or {}
    credentials = device.get("credentials") or {}
    lines = [
        ("device", device["id"]),
        ("source", device.get("source")),
        ("enabled", device.get("enabled")),
        ("state", f"{state.get('state')}" + (f" ({state['reason']})" if state.get("reason") else "") + f" since {when(state.get('since'))}"),
        ("last seen", f"{when(state.get('last_seen'))} from {state.get('last_address') or '-'}"),
        ("labels", labels_text(device.get("labels"))),
        ("login", f"{credentials.get('username')}" + (" (password set)" if credentials.get("password") else "")
         + (f" key {credentials['private_key_file']}" if credentials.get("private_key_file") else "")),
    ]
    for key in device.get("ssh_host_keys") or ():
        lines.append(("ssh host key", key if len(key) < 80 else key[:77] + "..."))
    for fingerprint in device.get("tls_fingerprints") or ():
        lines.append(("tls fingerprint", fingerprint))
    session = device.get("session")
    if session:
        lines += [
            ("session", f"{session.get('transport')} from {session.get('peer')}, up {duration(session.get('uptime'))}"),
        ]
        for name, value in sorted((session.get("algorithms") or {}).items()):
            lines.append((f"  {name}", value))
        capabilities = session.get("capabilities") or []
        if capabilities:
            lines.append(("  capabilities", len(capabilities)))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name.ljust(width)}  {value}")
    history = device.get("history") or []
    if history:
        print()
        table(((when(e.get("time")), e.get("event"), e.get("reason") or e.get("peer") or "") for e in history),
              ("TIME", "EVENT", "DETAIL"))


def cmd_pending(client: Client, args) -> None:
    result = client.json("GET", f"{V1}/pending")
    if args.json:
        return print_json(result)
    table(
        ((p["pending_id"], p.get("identity_kind"), p.get("fingerprint"), p.get("claimed_device_id") or "-",
          p.get("peer") or "-", p.get("count"), when(p.get("last_seen")), p.get("status"))
         for p in result["pending"]),
        ("ID", "KIND", "FINGERPRINT", "CLAIMS", "ADDRESS", "TRIES", "LAST SEEN", "STATUS"),
    )


def cmd_approve(client: Client, args) -> None:
    body: Dict[str, Any] = {}
    if args.id:
        body["id"] = args.id
    if args.label:
        body["labels"] = parse_labels(args.label)
    if args.username or args.password_file or args.private_key_file:
        credentials: Dict[str, Any] = {}
        if args.username:
            credentials["username"] = args.username
        if args.password_file:
            # Read here and sent once over the API; never on a command line.
            try:
                with open(args.password_file, encoding="utf-8") as handle:
                    credentials["password"] = handle.read().rstrip("\r\n")
            except OSError as error:
                raise CLIError(f"cannot read {args.password_file}: {error.strerror}") from None
        if args.private_key_file:
            credentials["private_key_file"] = os.path.abspath(args.private_key_file)
        body["credentials"] = credentials
    device = client.json("POST", f"{V1}/pending/{quote(args.pending_id)}/approve", body)
    if args.json:
        return print_json(device)
    print(f"approved: pending {args.pending_id} is now device {device['id']}")


def cmd_deny(client: Client, args) -> None:
    entry = client.json("POST", f"{V1}/pending/{quote(args.pending_id)}/deny")
    if args.json:
        return print_json(entry)
    print(f"denied: {entry.get('identity_kind')} {entry.get('fingerprint')}")


def cmd_sessions(client: Client, args) -> None:
    result = client.json("GET", f"{V1}/sessions")
    if args.json:
        return print_json(result)
    table(
        ((s["device_id"], s.get("transport"), s.get("peer"), duration(s.get("uptime")),
          (s.get("counters") or {}).get("rpcs", "-"))
         for s in result["sessions"]),
        ("DEVICE", "TRANSPORT", "PEER", "UPTIME", "RPCS"),
    )


def cmd_close(client: Client, args) -> None:
    result = client.json("DELETE", f"{V1}/sessions/{quote(args.device)}")
    if args.json:
        return print_json(result)
    print(f"closing the session of {args.device}")


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise CLIError(f"cannot read {name}: {error.strerror}") from None


def cmd_rpc(client: Client, args) -> None:
    device = quote(args.device)
    query: List[Tuple[str, str]] = []
    if args.filter:
        query.append(("filter", args.filter))
    if args.rpc_timeout:
        query.append(("timeout", str(args.rpc_timeout)))
    if args.get_config or args.get:
        if args.file:
            raise CLIError("give an RPC file or --get-config/--get, not both")
        if args.get_config:
            query.insert(0, ("source", args.source))
        operation = "get-config" if args.get_config else "get"
        status, _, data = client.call("GET", f"{V1}/devices/{device}/netconf/{operation}?" + urllib.parse.urlencode(query))
    else:
        if args.filter:
            raise CLIError("--filter goes with --get-config or --get")
        if args.file is None and sys.stdin.isatty():
            raise CLIError("give the RPC as a FILE, or - to read it from stdin (or use --get-config/--get)")
        body = _read_input(args.file or "-")
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        status, _, data = client.call(
            "POST", f"{V1}/devices/{device}/netconf/rpc{suffix}", raw=body, headers={"Content-Type": "application/xml"}
        )
    if status >= 400:
        if args.json:
            sys.stdout.write(data.decode("utf-8", "replace"))
        raise CLIError(error_line(status, data))
    if args.json:
        return print_json({"device_id": args.device, "reply": data.decode("utf-8", "replace")})
    sys.stdout.write(pretty_xml(data))


def pretty_xml(data: bytes) -> str:
    try:
        from lxml import etree

        parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
        return etree.tostring(etree.fromstring(data, parser), pretty_print=True, encoding="unicode")
    except Exception:  # not XML after all: show it as it came
        return data.decode("utf-8", "replace") + ("\n" if not data.endswith(b"\n") else "")


def cmd_restconf(client: Client, args) -> None:
    path = args.path if args.path.startswith("/") else "/" + args.path
    target, _, query = path.partition("?")
    url = f"{V1}/devices/{quote(args.device)}/restconf" + urllib.parse.quote(target, safe="/:=,@!$&'()*+;-._~")
    if query:
        url += "?" + query
    headers = {"Accept": args.accept}
    body = None
    if args.data is not None:
        body = _read_input(args.data)
        headers["Content-Type"] = args.content_type
    status, reply_headers, data = client.call(args.method.upper(), url, raw=body, headers=headers)
    if args.json:
        text = data.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        print_json({"status": status, "headers": reply_headers, "body": parsed})
    elif data:
        sys.stdout.write(data.decode("utf-8", "replace") + ("" if data.endswith(b"\n") else "\n"))
    if status >= 400:
        # Our own error document (unknown device, not connected ...) or the device's answer.
        raise CLIError(error_line(status, data) if _is_api_error(data) else f"the device answered HTTP {status}")


def _is_api_error(data: bytes) -> bool:
    try:
        document = json.loads(data)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("error"), dict) and "status" in document["error"]


def cmd_events(client: Client, args) -> None:
    if not args.follow:
        if len(args.device or ()) != 1:
            raise CLIError("without --follow, give one --device to show its recent history")
        device = client.json("GET", f"{V1}/devices/{quote(args.device[0])}")
        for event in reversed(device.get("history") or []):
            print_event(event, args.json)
        return
    if args.subscribe:
        if not args.device:
            raise CLIError("--subscribe needs --device: whose NETCONF notifications to subscribe to")
        for device in args.device:
            client.json("POST", f"{V1}/devices/{quote(device)}/netconf/subscription", {})
    query = [("device", d) for d in args.device or ()] + [("kind", k) for k in args.kind or ()]
    response = client.open("GET", f"{V1}/events" + ("?" + urllib.parse.urlencode(query) if query else ""),
                           headers={"Accept": "text/event-stream"}, timeout=args.idle_timeout)
    with response:
        if response.status >= 400:
            raise CLIError(error_line(response.status, response.read()))
        data_lines: List[str] = []
        while True:
            line = response.readline()
            if not line:
                raise CLIError("the server closed the event stream")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith("data:"):
                data_lines.append(text[5:].lstrip())
            elif not text and data_lines:
                try:
                    event = json.loads("\n".join(data_lines))
                except ValueError:
                    event = {"event": "?", "data": "\n".join(data_lines)}
                data_lines = []
                print_event(event, args.json)
                sys.stdout.flush()


def print_event(event: Dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event, sort_keys=True))
        return
    rest = " ".join(f"{k}={v}" for k, v in sorted(event.items()) if k not in ("event", "time", "device_id") and v is not None)
    device = event.get("device_id")
    print(f"{when(event.get('time'))} {event.get('event')}" + (f" [{device}]" if device else "") + (f" {rest}" if rest else ""))


def cmd_tokens(client: Client, args) -> None:
    if args.tokens_command == "add":
        body = {"role": args.role, "labels": parse_labels(args.labels), "name": args.name or ""}
        created = client.json("POST", f"{V1}/tokens", body)
        if args.json:
            return print_json(created)
        # The token is shown this once; the server keeps only its hash.
        print(created["secret"])
        print(f"token {created['id']}: role {created['role']}, labels {labels_text(created.get('labels'))}"
              " (store it now: it cannot be shown again)", file=sys.stderr)
    elif args.tokens_command == "remove":
        client.json("DELETE", f"{V1}/tokens/{quote(args.token_id)}")
        if not args.json:
            print(f"removed token {args.token_id}")
    else:
        result = client.json("GET", f"{V1}/tokens")
        if args.json:
            return print_json(result)
        table(((t["id"], t["role"], labels_text(t.get("labels")), when(t.get("created")), t.get("name"))
               for t in result["tokens"]), ("ID", "ROLE", "LABELS", "CREATED", "NAME"))


# -- argument parsing ------------------------------------------------------------


def common_options(suppress: bool) -> argparse.ArgumentParser:
    """
    The options every command takes, before or after its name.  After the
    name their defaults are suppressed, or they would undo the same option
    given before the name (an argparse subparser quirk).
    """
    def default(value):
        return argparse.SUPPRESS if suppress else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=default(None),
                        help=f"the server's state directory (default ./{DEFAULT_STATE_DIR})")
    common.add_argument("--url", default=default(None), help="API base URL (default: read from STATE_DIR/api-address)")
    common.add_argument("--token", default=default(None),
                        help="bearer token (default: STATE_DIR/api-token; or CALLHOME_MUX_TOKEN)")
    common.add_argument("--cafile", default=default(None), help="CA certificate(s) for an https API")
    common.add_argument("--json", action="store_true", default=default(False), help="machine-readable output")
    common.add_argument("--http-timeout", type=float, default=default(120.0), help="seconds to wait for the API")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options(suppress=True)
    parser = argparse.ArgumentParser(prog="callhome-mux", description="Talk to a running callhome-mux server.",
                                     parents=[common_options(suppress=False)])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, function, help):
        sub = commands.add_parser(name, help=help, parents=[common], description=help)
        sub.set_defaults(function=function)
        return sub

    sub = command("devices", cmd_devices, "list devices")
    sub.add_argument("--state", action="append", help="only devices in this state (repeatable)")
    sub.add_argument("--label", action="append", help="only devices with this label, k=v (repeatable)")
    command("show", cmd_show, "one device: state, identities, session, recent history").add_argument("device")
    command("pending", cmd_pending, "unknown callers waiting for approval")
    sub = command("approve", cmd_approve, "approve a pending caller as a device")
    sub.add_argument("pending_id")
    sub.add_argument("--id", help="device id (default: derived from the fingerprint)")
    sub.add_argument("--label", action="append", help="label k=v (repeatable, or comma-separated)")
    sub.add_argument("--username", help="SSH user name to log in with")
    sub.add_argument("--password-file", help="file holding the SSH password (read here, sent once)")
    sub.add_argument("--private-key-file", help="SSH private key file on the server")
    command("deny", cmd_deny, "refuse a pending caller from now on").add_argument("pending_id")
    command("sessions", cmd_sessions, "sessions that are up")
    command("close", cmd_close, "close a device's session").add_argument("device")
    sub = command("rpc", cmd_rpc, "send a NETCONF RPC (XML from FILE or stdin) and print the reply")
    sub.add_argument("device")
    sub.add_argument("file", nargs="?", help="XML of the operation (or a whole <rpc>); - for stdin")
    sub.add_argument("--get-config", action="store_true", help="send <get-config> instead")
    sub.add_argument("--get", action="store_true", help="send <get> instead")
    sub.add_argument("--source", default="running", help="datastore for --get-config (default running)")
    sub.add_argument("--filter", help="subtree filter (XML) or XPath expression")
    sub.add_argument("--timeout", dest="rpc_timeout", type=float, help="seconds the server waits for the reply")
    sub = command("restconf", cmd_restconf, "one RESTCONF request to a device, e.g. GET /data/ietf-interfaces:interfaces")
    sub.add_argument("device")
    sub.add_argument("method", help="GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS")
    sub.add_argument("path", help="path under the device's RESTCONF root, e.g. /data/...")
    sub.add_argument("--data", help="request body from a file, or - for stdin")
    sub.add_argument("--content-type", default="application/yang-data+json")
    sub.add_argument("--accept", default="application/yang-data+json")
    sub = command("events", cmd_events, "live events (--follow), or a device's recent history")
    sub.add_argument("--follow", "-f", action="store_true", help="stream live events until interrupted")
    sub.add_argument("--device", action="append", help="only this device (repeatable)")
    sub.add_argument("--kind", action="append", help="only events whose name starts so, e.g. session. (repeatable)")
    sub.add_argument("--subscribe", action="store_true",
                     help="first subscribe to the devices' NETCONF notifications (they arrive as netconf.notification)")
    sub.add_argument("--idle-timeout", type=float, default=None, help="give up after this many silent seconds")
    sub = command("tokens", cmd_tokens, "API tokens (admin)")
    tokens = sub.add_subparsers(dest="tokens_command", metavar="ACTION")
    tokens.add_parser("list", parents=[common], help="list tokens")
    add = tokens.add_parser("add", parents=[common], help="create a token (printed once)")
    add.add_argument("--role", required=True, choices=("read", "operate", "admin"))
    add.add_argument("--labels", action="append", help="limit to devices with these labels, k=v[,k=v]")
    add.add_argument("--name", help="what the token is for")
    remove = tokens.add_parser("remove", parents=[common], help="revoke a token")
    remove.add_argument("token_id")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        url, token = locate(args)
        client = Client(url, token, args.http_timeout, args.cafile)
        args.function(client, args)
    except CLIError as error:
        print(f"callhome-mux: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
