"""The OpenAPI document: one source, and in step with the routes the server has."""

from __future__ import annotations

import json
import os
import re

from twisted.trial import unittest

from callhome_mux.api.admin import openapi_document
from callhome_mux.api.context import APIContext
from callhome_mux.api.metrics import Metrics
from callhome_mux.api.service import build_router
from callhome_mux.api.settings import APISettings
from callhome_mux.settings import ConfigError, from_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def routes():
    router = build_router(APIContext(None, APISettings(), Metrics(), None))
    found = {}
    for route in router.routes:
        template = route.pattern.pattern
        # ^/api/v1/devices/(?P<id>[^/]+)$ -> /api/v1/devices/{id}
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", template).strip("^$").replace("\\", "")
        for method in route.methods:
            found[(template, method.lower())] = route.role
    return found


class OpenAPITests(unittest.TestCase):
    def test_docs_copy_is_the_served_document(self):
        with open(os.path.join(ROOT, "docs", "openapi.json"), "rb") as handle:
            self.assertEqual(handle.read(), openapi_document(), "docs/openapi.json differs from callhome_mux/api/openapi.json")

    def test_every_route_is_documented_with_its_role(self):
        document = json.loads(openapi_document())
        self.assertTrue(document["openapi"].startswith("3."))
        documented = {}
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                documented[(path, method)] = operation.get("x-required-role")
        served = routes()
        self.assertEqual(sorted(set(served) - set(documented)), [], "routes missing from the OpenAPI document")
        self.assertEqual(sorted(set(documented) - set(served)), [], "documented operations the server does not have")
        for key, role in served.items():
            self.assertEqual(documented[key], role, key)

    def test_valid_openapi_3(self):
        # In the test extra: this check must run, not skip.
        from openapi_spec_validator import validate

        validate(json.loads(openapi_document()))

    def test_references_resolve(self):
        document = json.loads(openapi_document())
        text = json.dumps(document)
        for reference in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
            node = document
            for part in reference.split("/"):
                self.assertIn(part, node, reference)
                node = node[part]


class SettingsTests(unittest.TestCase):
    def test_defaults_listen_on_loopback(self):
        settings = APISettings()
        self.assertEqual(settings.listen, "tcp:8334:interface=127.0.0.1")
        self.assertTrue(settings.metrics_auth)

    def test_from_table_names_the_bad_key(self):
        settings = from_table(APISettings, {"listen": "ssl:8443:privateKey=k.pem", "sse-keepalive": 5}, "api")
        self.assertEqual((settings.listen, settings.sse_keepalive), ("ssl:8443:privateKey=k.pem", 5.0))
        for table, key in (({"sse_max_queued": 0}, "api.sse_max_queued"), ({"rpc_timeout": -1}, "api.rpc_timeout"),
                           ({"bogus": 1}, "api.bogus"), ({"listen": ""}, "api.listen")):
            with self.assertRaises(ConfigError) as caught:
                from_table(APISettings, table, "api")
            self.assertEqual(caught.exception.key, key)
