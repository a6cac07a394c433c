"""
A real HTTP server from Debian as the device: nginx serving a static
RESTCONF tree, reached in the call-home shape.

We listen; socat dials us and then nginx (C{socat TCP:us TCP:nginx}), so
the connection our client runs on was opened *towards* us, as a device
calling home opens it.  nginx runs from a temp dir with its own config
(no daemon, no master, every path in the temp dir) on a free loopback
port.  nginx's access log records the connection number and the request
number on it, which proves every request used the one connection.

CI installs nginx and socat; this test fails, not skips, when they are
missing (set CALLHOME_MUX_NO_NGINX=1 to skip on a workstation without them).
"""

import json
import os
import shutil
import signal
import socket
import tempfile

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from callhome_mux.events import EventBus
from callhome_mux.restconf.errors import RestconfError
from callhome_mux.restconf.session import restconf_protocol
from callhome_mux.restconf.settings import RestconfSettings

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SOCAT = shutil.which("socat")

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format conn '$connection $connection_requests "$request" $status';
    access_log {tmp}/access.log conn;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        default_type application/yang-data+json;
        location = /.well-known/host-meta {{ default_type application/xrd+xml; }}
    }}
}}
"""

HOST_META = '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0"><Link rel="restconf" href="/restconf"/></XRD>'
YANG_LIBRARY = {
    "ietf-yang-library:yang-library": {
        "content-id": "nginx-1",
        "module-set": [
            {
                "name": "static",
                "module": [
                    {"name": "ietf-interfaces", "revision": "2018-02-20", "namespace": "urn:ietf:params:xml:ns:yang:ietf-interfaces"},
                    {"name": "ietf-yang-library", "revision": "2019-01-04", "namespace": "urn:ietf:params:xml:ns:yang:ietf-yang-library"},
                ],
            }
        ],
    }
}
#: The readiness probe's request, left out of the access-log checks.
PROBE_PATH = "/.well-known/host-meta?readiness-probe"
INTERFACES = {"ietf-interfaces:interfaces": {"interface": [{"name": "eth0", "enabled": True}]}}


class _Process(protocol.ProcessProtocol):
    """Collects output and tells when the process ends."""

    def __init__(self, name):
        self.name = name
        self.output = b""
        self.ended = defer.Deferred()
        self.running = True

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.running = False
        self.ended.callback(reason.value)


class _Probe(protocol.Protocol):
    """One HTTP/1.0 request for host-meta; C{done} fires with the whole answer."""

    def __init__(self):
        self.done = defer.Deferred()
        self.answer = b""

    def connectionMade(self):
        self.transport.write(f"GET {PROBE_PATH} HTTP/1.0\r\nHost: probe\r\n\r\n".encode())
        # A stranger on the port may never answer: give up on it.
        self._give_up = reactor.callLater(2, self.transport.abortConnection)

    def dataReceived(self, data):
        self.answer += data
        if len(self.answer) > 65536:
            self.transport.abortConnection()

    def connectionLost(self, reason=None):
        if self._give_up.active():
            self._give_up.cancel()
        self.done.callback(self.answer)


class _Listener(protocol.Factory):
    noisy = False

    def __init__(self, events, clock):
        self.events = events
        self.clock = clock
        self.built = defer.Deferred()

    def buildProtocol(self, addr):
        client = restconf_protocol(
            "nginx-device", self.events, RestconfSettings(), {"peer": f"{addr.host}:{addr.port}"}, self.clock
        )
        self.built.callback(client)
        return client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class NginxDeviceTests(unittest.TestCase):
    def setUp(self):
        missing = [name for name, path in (("nginx", NGINX), ("socat", SOCAT)) if path is None]
        if missing:
            self.fail(f"{' and '.join(missing)} not installed; CI must install them (apt-get install nginx-light socat)")
        self.tmp = tempfile.mkdtemp(prefix="callhome-nginx-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        www = os.path.join(self.tmp, "www")
        self._write(os.path.join(www, ".well-known", "host-meta"), HOST_META)
        data = os.path.join(www, "restconf", "data")
        self._write(os.path.join(data, "ietf-yang-library:yang-library"), json.dumps(YANG_LIBRARY))
        self._write(os.path.join(data, "ietf-interfaces:interfaces"), json.dumps(INTERFACES))
        self.clock = task.Clock()
        self.events = EventBus(clock=self.clock)
        self.seen = []
        self.events.addObserver(self.seen.append)

    @staticmethod
    def _write(path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)

    def _spawn(self, name, argv):
        process = _Process(name)
        transport = reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=self.tmp)

        @defer.inlineCallbacks
        def stop():
            if process.running:
                try:
                    transport.signalProcess(signal.SIGTERM)
                except error.ProcessExitedAlready:
                    pass
            yield process.ended

        self.addCleanup(stop)
        return process

    @defer.inlineCallbacks
    def _start_nginx(self):
        """nginx on a free port; a port taken between our probe and nginx's bind is retried."""
        for _ in range(3):
            self.nginx_port = _free_port()
            with open(os.path.join(self.tmp, "nginx.conf"), "w") as conf:
                conf.write(NGINX_CONF.format(tmp=self.tmp, port=self.nginx_port))
            argv = [NGINX, "-p", self.tmp, "-c", os.path.join(self.tmp, "nginx.conf"), "-e", os.path.join(self.tmp, "error.log")]
            nginx = self._spawn("nginx", argv)
            listening = yield self._wait_until_listening(nginx)
            if listening:
                return nginx
            if "Address already in use" not in self._error_log():
                break
        self.fail(f"nginx did not start: {nginx.output.decode(errors='replace')}{self._error_log()}")

    @defer.inlineCallbacks
    def _wait_until_listening(self, nginx):
        """Connect until nginx accepts (it gives no other readiness signal); False if it exits."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.nginx_port, timeout=2)
        for _ in range(400):
            if not nginx.running:
                return False
            try:
                probe = yield endpoint.connect(protocol.Factory.forProtocol(_Probe))
            except error.ConnectError:
                yield task.deferLater(reactor, 0.025, lambda: None)
                continue
            # Something listens: make sure it is our nginx serving our tree,
            # not whoever took the port between our probe and nginx's bind.
            answer = yield probe.done
            if HOST_META.encode() in answer:
                return True
            yield task.deferLater(reactor, 0.025, lambda: None)
        self.fail(f"nginx never listened on {self.nginx_port}{self._error_log()}")

    def _error_log(self):
        path = os.path.join(self.tmp, "error.log")
        return open(path).read() if os.path.exists(path) else ""

    def _access_log(self):
        with open(os.path.join(self.tmp, "access.log")) as log:
            lines = [line for line in log.read().splitlines() if PROBE_PATH not in line]
        return [line.split(" ", 2) for line in lines]

    @defer.inlineCallbacks
    def test_client_over_a_socat_call_home_to_nginx(self):
        yield self._start_nginx()

        listener = _Listener(self.events, self.clock)
        port = reactor.listenTCP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        socat = self._spawn(
            "socat", [SOCAT, f"TCP:127.0.0.1:{port.getHost().port}", f"TCP:127.0.0.1:{self.nginx_port}"]
        )

        client = yield listener.built
        session = yield client.whenReady()
        self.assertEqual(session.root, "/restconf")
        self.assertEqual((session.details["module_count"], session.details["content_id"]), (2, "nginx-1"))

        interfaces = yield session.get("ietf-interfaces:interfaces", depth=2)
        self.assertEqual(interfaces.data, INTERFACES)
        self.assertEqual(interfaces.content_type, "application/yang-data+json")
        self.assertIsNotNone(interfaces.etag)  # nginx gives static files an ETag

        try:
            yield session.get("ietf-interfaces:interfaces/interface=eth9")
        except RestconfError as refusal:
            # nginx answers with an HTML page, not ietf-restconf:errors.
            self.assertEqual((refusal.status, refusal.errors), (404, ()))
        else:
            self.fail("nginx should have answered 404")

        # Several at once: still one connection, one request at a time.
        replies = yield defer.gatherResults([session.get("ietf-interfaces:interfaces") for _ in range(5)])
        self.assertEqual([r.status for r in replies], [200] * 5)

        lost = session.whenLost()
        session.close("test over")
        yield lost
        yield socat.ended  # socat exits once both of its sides have closed

        log = self._access_log()
        self.assertEqual(len(log), 2 + 1 + 1 + 5)
        self.assertEqual({connection for connection, _, _ in log}, {log[0][0]})
        self.assertEqual([int(number) for _, number, _ in log], list(range(1, len(log) + 1)))
        self.assertTrue(log[0][2].startswith('"GET /.well-known/host-meta HTTP/1.1"'))
        self.assertEqual(
            [e["event"] for e in self.seen if e["event"].startswith("restconf.")],
            ["restconf.session.ready", "restconf.session.lost"],
        )
