"""
The real thing: OpenSSH's sshd plays the calling-home device.

C{socat} dials our listener and joins that TCP connection to C{sshd -i}
(inetd mode: one SSH session on stdin/stdout), whose C{netconf} subsystem
runs L{callhome_mux.testing.netconf_stdio}.  So the bytes on the wire are
OpenSSH's own: key exchange, host key signature, user auth, channel and
subsystem handling, window management, keepalive replies.

Needs C{/usr/sbin/sshd} and C{/usr/bin/socat} (Debian: openssh-server,
socat), and permission to create C{/run/sshd} if it is missing.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys

from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

from callhome_mux.inventory.model import Credentials, Device
from callhome_mux.ssh.settings import SSHSettings
from tests.test_ssh_harness import Manager, generate_key, write_private_key

SSHD = "/usr/sbin/sshd"
SOCAT = "/usr/bin/socat"
PRIVSEP_DIR = "/run/sshd"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNING = '<system xmlns="urn:example:system"><hostname>openssh-device</hostname></system>'


class _Collect(protocol.ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class OpenSSHDevice:
    """A temp sshd configuration: host key, authorized key, netconf subsystem."""

    def __init__(self, testcase, host_key_type="ed25519", user_key_type="ed25519"):
        self.testcase = testcase
        self.directory = os.path.abspath(testcase.mktemp())
        os.makedirs(self.directory)
        self.host_key_path = os.path.join(self.directory, "host_key")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", host_key_type, "-N", "", "-f", self.host_key_path],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(self.host_key_path + ".pub") as handle:
            self.host_key_line = " ".join(handle.read().split()[:2])
        user_key = generate_key(user_key_type)
        self.user_key_path = write_private_key(testcase, user_key)
        authorized = os.path.join(self.directory, "authorized_keys")
        with open(authorized, "w") as handle:
            handle.write(user_key.public().toString("openssh").decode() + "\n")
        self.log_path = os.path.join(self.directory, "sshd.log")
        self.config_path = os.path.join(self.directory, "sshd_config")
        running = os.path.join(self.directory, "running.xml")
        with open(running, "w") as handle:
            handle.write(RUNNING)
        # sshd runs this through the user's shell: no quoting games, paths only.
        subsystem = (
            f"/usr/bin/env PYTHONPATH={REPO_ROOT} {sys.executable} -m callhome_mux.testing.netconf_stdio "
            f"--running-file {running}"
        )
        with open(self.config_path, "w") as handle:
            handle.write(
                "\n".join(
                    [
                        f"HostKey {self.host_key_path}",
                        f"AuthorizedKeysFile {authorized}",
                        "StrictModes no",
                        "UsePAM no",
                        "PubkeyAuthentication yes",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "PermitRootLogin prohibit-password",
                        "PidFile none",
                        "LogLevel VERBOSE",
                        f"Subsystem netconf {subsystem}",
                        "",
                    ]
                )
            )
        self.username = getpass.getuser()

    def device_entry(self, device_id="openssh-1") -> Device:
        return Device(
            id=device_id,
            ssh_host_keys=(self.host_key_line,),
            credentials=Credentials(username=self.username, private_key_file=self.user_key_path),
        )

    def callHome(self, port: int) -> _Collect:
        """Start socat: dial 127.0.0.1:port and run sshd -i on that connection."""
        sshd = f"{SSHD} -i -f {self.config_path} -E {self.log_path}"
        collect = _Collect()
        process = reactor.spawnProcess(
            collect, SOCAT, [SOCAT, f"TCP:127.0.0.1:{port}", f"EXEC:{sshd}"], env=dict(os.environ)
        )
        self.testcase.addCleanup(self._reap, process, collect)
        return collect

    @defer.inlineCallbacks
    def _reap(self, process, collect):
        if not collect.ended.called:
            try:
                process.signalProcess("TERM")
            except Exception:
                pass
        yield collect.ended

    def log(self) -> str:
        try:
            with open(self.log_path) as handle:
                return handle.read()
        except OSError:
            return "(no sshd log)"


def ensure_privsep_dir(testcase) -> None:
    if os.path.isdir(PRIVSEP_DIR):
        return
    try:
        os.makedirs(PRIVSEP_DIR, mode=0o755)
    except OSError as error:
        testcase.fail(f"sshd needs {PRIVSEP_DIR} and it cannot be created here: {error}")


class OpenSSHTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        for tool in (SSHD, SOCAT):
            if not os.access(tool, os.X_OK):
                self.fail(f"{tool} is required (install openssh-server and socat)")
        ensure_privsep_dir(self)

    @defer.inlineCallbacks
    def session_with(self, openssh: OpenSSHDevice, settings=None, clock=None):
        manager = yield Manager(self, [openssh.device_entry()], settings=settings, clock=clock).start()
        failed = manager.whenEvent("ssh.connection.closed")
        openssh.callHome(manager.port)
        connected = manager.registry.whenConnected("openssh-1")
        first = yield defer.DeferredList([connected, failed], fireOnOneCallback=True, fireOnOneErrback=True)
        result, index = first
        if index == 1:
            self.fail(f"the OpenSSH device did not get a session: {result}\n--- sshd log ---\n{openssh.log()}")
        return manager, result

    @defer.inlineCallbacks
    def test_netconf_over_openssh_ed25519(self):
        openssh = OpenSSHDevice(self)
        manager, session = yield self.session_with(openssh)
        self.assertTrue(session.details["algorithms"]["server_version"].startswith("SSH-2.0-OpenSSH"))
        self.assertEqual(session.details["algorithms"]["host_key"], "ssh-ed25519")
        self.assertEqual(session.details["auth_method"], "publickey")
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "openssh-device")
        replies = yield defer.gatherResults([session.get_config("running") for _ in range(10)])
        self.assertEqual(len(replies), 10)

    @defer.inlineCallbacks
    def test_rsa_user_key_and_ecdsa_host_key(self):
        # OpenSSH refuses SHA-1 "ssh-rsa" signatures: this proves we sign
        # with rsa-sha2-* as its server-sig-algs asks.
        openssh = OpenSSHDevice(self, host_key_type="ecdsa", user_key_type="rsa")
        manager, session = yield self.session_with(openssh)
        self.assertTrue(session.details["algorithms"]["host_key"].startswith("ecdsa-sha2-"))
        data = yield session.get_config("running")
        self.assertEqual(data.findtext(".//{urn:example:system}hostname"), "openssh-device")

    @defer.inlineCallbacks
    def test_openssh_answers_our_keepalives(self):
        clock = task.Clock()
        openssh = OpenSSHDevice(self)
        settings = SSHSettings(keepalive_interval=10, keepalive_max_missed=1)
        manager, session = yield self.session_with(openssh, settings=settings, clock=clock)
        for _ in range(3):
            clock.advance(10)
            # The RPC reply comes after sshd's keepalive reply on the stream.
            yield session.get_config("running")
        self.assertEqual(manager.named("ssh.keepalive.lost"), [])
        self.assertIs(manager.registry.get("openssh-1"), session)

    @defer.inlineCallbacks
    def test_unknown_openssh_host_key_refused(self):
        openssh = OpenSSHDevice(self)
        other = OpenSSHDevice(self)
        manager = yield Manager(self, [other.device_entry()]).start()
        unknown = manager.whenEvent("ssh.hostkey.unknown")
        openssh.callHome(manager.port)
        event = yield unknown
        from callhome_mux.inventory.model import ssh_key_fingerprint_from_text

        self.assertEqual(event["fingerprint"], ssh_key_fingerprint_from_text(openssh.host_key_line))
