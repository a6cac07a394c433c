"""Who may do what: tokens, roles, label limits, the token file."""

from __future__ import annotations

import json
import os
import stat

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.api.tokens import Principal, TokenStore, bearer, hash_token
from callhome_mux.testing.ssh_device import SSHCallHomeDevice
from tests.test_api_harness import APIServer, ssh_device_table, temporary_directory


class AuthTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.ups = SSHCallHomeDevice(password="pw")
        self.core = SSHCallHomeDevice(password="pw")
        self.server = yield APIServer(
            self,
            [
                ssh_device_table(self.ups, "ups-1", labels={"owner": "ups-team"}),
                ssh_device_table(self.core, "core-1", labels={"owner": "core-team"}),
            ],
        ).start()

    @defer.inlineCallbacks
    def test_no_token_or_a_wrong_one_is_401(self):
        for token in (None, "chm_wrong", ""):
            reply = yield self.server.http("GET", "/api/v1/devices", token=token)
            self.assertEqual(reply.status, 401, reply)
            self.assertEqual(reply.header("www-authenticate"), 'Bearer realm="callhome-mux"')
            self.assertEqual(reply.json()["error"]["status"], 401)
        reply = yield self.server.http("GET", "/api/v1/devices", token=None, headers={"Authorization": "Basic eDp5"})
        self.assertEqual(reply.status, 401, reply)

    @defer.inlineCallbacks
    def test_health_and_openapi_need_no_token(self):
        reply = yield self.server.http("GET", "/healthz", token=None)
        self.assertEqual((reply.status, reply.json()), (200, {"status": "ok"}))
        reply = yield self.server.http("GET", "/api/v1/openapi.json", token=None)
        self.assertEqual(reply.status, 200)
        self.assertTrue(reply.json()["openapi"].startswith("3."))
        reply = yield self.server.http("GET", "/metrics", token=None)
        self.assertEqual(reply.status, 401)

    @defer.inlineCallbacks
    def test_roles(self):
        server = self.server
        reader = yield server.token("read")
        operator = yield server.token("operate")
        yield server.connect(self.ups, "ups-1")
        checks = [
            (reader, "GET", "/api/v1/devices", None, 200),
            (reader, "GET", "/api/v1/pending", None, 200),
            (reader, "DELETE", "/api/v1/sessions/ups-1", None, 403),
            (reader, "POST", "/api/v1/devices/ups-1/netconf/rpc", "<get/>", 403),
            (reader, "POST", "/api/v1/pending/1/approve", None, 403),
            (reader, "GET", "/api/v1/tokens", None, 403),
            (operator, "POST", "/api/v1/devices/ups-1/netconf/rpc", "<get/>", 200),
            (operator, "POST", "/api/v1/devices", {"id": "x"}, 403),
            (operator, "PATCH", "/api/v1/devices/ups-1", {"enabled": False}, 403),
            (operator, "POST", "/api/v1/tokens", {"role": "admin"}, 403),
            (operator, "DELETE", "/api/v1/sessions/ups-1", None, 202),
        ]
        for token, method, path, body, status in checks:
            reply = yield server.http(method, path, token=token, body=body)
            self.assertEqual(reply.status, status, (method, path, reply))
            if status == 403:
                self.assertIn("role", reply.json()["error"]["message"])

    @defer.inlineCallbacks
    def test_label_limited_token_sees_only_its_devices(self):
        server = self.server
        token = yield server.token("operate", {"owner": "ups-team"})
        yield server.connect(self.ups, "ups-1")
        yield server.connect(self.core, "core-1")
        reply = yield server.http("GET", "/api/v1/devices", token=token)
        self.assertEqual([d["id"] for d in reply.json()["devices"]], ["ups-1"])
        reply = yield server.http("GET", "/api/v1/sessions", token=token)
        self.assertEqual([s["device_id"] for s in reply.json()["sessions"]], ["ups-1"])
        reply = yield server.http("GET", "/api/v1/pending", token=token)
        self.assertEqual(reply.json()["pending"], [])
        # Another team's device does not exist for this token: 404, never 403.
        for method, path, body in (
            ("GET", "/api/v1/devices/core-1", None),
            ("GET", "/api/v1/sessions/core-1", None),
            ("DELETE", "/api/v1/sessions/core-1", None),
            ("POST", "/api/v1/devices/core-1/netconf/rpc", "<get/>"),
            ("GET", "/api/v1/devices/core-1/netconf/get-config", None),
            ("GET", "/api/v1/devices/core-1/restconf/data/x", None),
        ):
            reply = yield server.http(method, path, token=token, body=body)
            self.assertEqual(reply.status, 404, (method, path, reply))
            self.assertEqual(reply.json()["error"]["message"], "device 'core-1' not found")
        same = yield server.http("GET", "/api/v1/devices/nonexistent", token=token)
        self.assertEqual(same.json()["error"]["message"], "device 'nonexistent' not found")
        reply = yield server.http("POST", "/api/v1/devices/ups-1/netconf/rpc", token=token, body="<get/>")
        self.assertEqual(reply.status, 200, reply)
        self.assertIsNotNone(server.service.registry.get("core-1"))
        reply = yield server.http("GET", "/api/v1/whoami", token=token)
        self.assertEqual(reply.json()["labels"], {"owner": "ups-team"})
        self.assertNotIn("secret", reply.json())

    @defer.inlineCallbacks
    def test_token_management(self):
        server = self.server
        reply = yield server.http("POST", "/api/v1/tokens", body={"role": "read", "labels": {"owner": "ups-team"}, "name": "dash"})
        self.assertEqual(reply.status, 201, reply)
        created = reply.json()
        secret = created["secret"]
        self.assertTrue(secret.startswith("chm_"))
        reply = yield server.http("GET", "/api/v1/tokens")
        listed = {t["id"]: t for t in reply.json()["tokens"]}
        self.assertEqual(listed[created["id"]]["role"], "read")
        self.assertNotIn(secret.encode(), reply.body)
        self.assertNotIn(b"sha256", reply.body)
        with open(os.path.join(server.state_dir, "api-tokens.json")) as handle:
            stored = json.load(handle)
        self.assertIn(hash_token(secret), [t["sha256"] for t in stored["tokens"]])
        self.assertNotIn(secret, json.dumps(stored))
        for bad in ({"role": "god"}, {"role": "read", "labels": {"a": 1}}, {"role": "read", "colour": "x"}):
            reply = yield server.http("POST", "/api/v1/tokens", body=bad)
            self.assertEqual(reply.status, 400, (bad, reply))
        reply = yield server.http("DELETE", f"/api/v1/tokens/{created['id']}")
        self.assertEqual(reply.status, 204, reply)
        reply = yield server.http("GET", "/api/v1/devices", token=secret)
        self.assertEqual(reply.status, 401, reply)
        reply = yield server.http("DELETE", f"/api/v1/tokens/{created['id']}")
        self.assertEqual(reply.status, 404, reply)
        # Tokens and secrets never reach an event.
        text = json.dumps([dict(e) for e in server.events], default=str)
        self.assertNotIn(secret, text)
        self.assertNotIn(server.admin_token, text)

    def test_first_start_writes_a_private_admin_token_and_says_where(self):
        server = self.server
        path = os.path.join(server.state_dir, "api-token")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(server.state_dir, "api-tokens.json")).st_mode), 0o600)
        [event] = server.named("api.token.generated")
        self.assertEqual(event["path"], path)
        self.assertNotIn(server.admin_token, json.dumps(event, default=str))
        with open(os.path.join(server.state_dir, "api-address")) as handle:
            self.assertEqual(handle.read().strip(), server.url)


class RestartTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_tokens_survive_a_restart_and_no_new_admin_token_is_made(self):
        first = yield APIServer(self).start()
        reader = yield first.token("read")
        yield first.stop()
        second = yield APIServer(self, state_dir=first.state_dir).start()
        self.assertEqual(second.admin_token, first.admin_token)
        self.assertEqual(second.named("api.token.generated"), [])
        reply = yield second.http("GET", "/api/v1/devices", token=reader)
        self.assertEqual(reply.status, 200, reply)


class TokenStoreUnitTests(unittest.TestCase):
    def test_authenticate_and_principal(self):
        store = TokenStore(os.path.join(temporary_directory(self), "tokens.json"))
        token, stored = store.add("operate", {"owner": "x"})
        principal = store.authenticate(token)
        self.assertEqual(principal, Principal(stored.id, "operate", {"owner": "x"}))
        self.assertTrue(principal.may("read") and principal.may("operate") and not principal.may("admin"))
        self.assertTrue(principal.sees_labels({"owner": "x", "site": "y"}))
        self.assertFalse(principal.sees_labels({"owner": "z"}))
        self.assertIsNone(store.authenticate(token + "x"))
        self.assertIsNone(store.authenticate(None))
        reloaded = TokenStore(store.path).load()
        self.assertEqual(reloaded.authenticate(token), principal)

    def test_bearer_header(self):
        self.assertEqual(bearer(b"Bearer abc"), "abc")
        self.assertEqual(bearer(b"bearer  abc "), "abc")
        self.assertIsNone(bearer(b"Basic abc"))
        self.assertIsNone(bearer(b"Bearer "))
        self.assertIsNone(bearer(None))
