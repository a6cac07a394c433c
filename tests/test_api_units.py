"""Small pure pieces of the API: URLs written for the CLI, JSON views, SSE encoding, path templates."""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.trial import unittest

from callhome_mux.api.events import encode_event
from callhome_mux.api.routing import compile_path
from callhome_mux.api.service import api_url
from callhome_mux.api.views import device_view, plain
from callhome_mux.inventory.model import Credentials, Device


class APIURLTests(unittest.TestCase):
    def test_local_url_for_each_kind_of_listener(self):
        self.assertEqual(api_url("tcp:8334:interface=127.0.0.1", IPv4Address("TCP", "127.0.0.1", 8334)), "http://127.0.0.1:8334")
        self.assertEqual(api_url("tcp:8334", IPv4Address("TCP", "0.0.0.0", 8334)), "http://127.0.0.1:8334")
        self.assertEqual(api_url("tcp6:8334", IPv6Address("TCP", "::", 8334)), "http://[::1]:8334")
        self.assertEqual(api_url("tcp6:8334:interface=\\:\\:1", IPv6Address("TCP", "::1", 8334)), "http://[::1]:8334")
        self.assertEqual(api_url("ssl:8443:privateKey=k", IPv4Address("TCP", "10.0.0.1", 8443)), "https://10.0.0.1:8443")


class ViewTests(unittest.TestCase):
    def test_device_view_never_carries_secrets(self):
        device = Device(
            "r1",
            credentials=Credentials(username="admin", password="Hunter-22", private_key_passphrase="Pass-Phrase-9"),
            outbound_ssh_secret="Shared-Secret-7",
            labels={"owner": "x"},
        )
        view = device_view(device)
        text = json.dumps(view)
        for secret in ("Hunter-22", "Pass-Phrase-9", "Shared-Secret-7"):
            self.assertNotIn(secret, text)
        self.assertEqual(view["credentials"]["password"], True)
        self.assertTrue(view["outbound_ssh_secret"])

    def test_plain_makes_anything_json(self):
        self.assertEqual(plain({"a": (1, 2), "b": b"x", "c": frozenset({"z", "y"}), 3: object}),
                         {"a": [1, 2], "b": "x", "c": ["y", "z"], "3": str(object)})


class EncodingTests(unittest.TestCase):
    def test_one_event_is_one_sse_message(self):
        chunk = encode_event(7, {"event": "session.up", "device_id": "r1", "reason": "line one\nline two"})
        self.assertTrue(chunk.endswith(b"\n\n"))
        lines = chunk.decode().rstrip("\n").split("\n")
        self.assertEqual(lines[:2], ["id: 7", "event: session.up"])
        self.assertEqual(len(lines), 3)
        self.assertEqual(json.loads(lines[2][len("data: "):])["reason"], "line one\nline two")


class PathTemplateTests(unittest.TestCase):
    def test_templates(self):
        pattern = compile_path("/api/v1/devices/{id}/restconf/{path*}")
        match = pattern.match("/api/v1/devices/r%2F1/restconf/data/a/b=c%2Fd")
        self.assertEqual(match.groupdict(), {"id": "r%2F1", "path": "data/a/b=c%2Fd"})
        self.assertIsNone(compile_path("/api/v1/devices/{id}").match("/api/v1/devices/a/b"))
