"""The CLI's restconf command against a RESTCONF device that called home over TLS."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, utils

from tests.test_api_restconf import DEVICE_ID, RestconfDeviceCase
from tests.test_cli import CLIResult, _environment


class CLIRestconfTests(RestconfDeviceCase):
    @defer.inlineCallbacks
    def cli(self, *args):
        argv = ["-m", "callhome_mux.cli", "--state-dir", self.server.state_dir, *args]
        out, err, code = yield utils.getProcessOutputAndValue(sys.executable, argv, env=_environment())
        return CLIResult(out, err, code)

    @defer.inlineCallbacks
    def test_get_and_patch(self):
        result = yield self.cli("restconf", DEVICE_ID, "GET", "/data/example-system:system?fields=hostname")
        self.assertEqual(result.code, 0, result)
        self.assertEqual(json.loads(result.out), {"example-system:system": {"hostname": "device-1"}})
        body = os.path.join(self.server.state_dir, "patch.json")
        with open(body, "w") as handle:
            json.dump({"example-system:system": {"hostname": "cli-1"}}, handle)
        result = yield self.cli("restconf", DEVICE_ID, "PATCH", "/data/example-system:system", "--data", body)
        self.assertEqual(result.code, 0, result)
        self.assertEqual(self.device.data["example-system:system"]["hostname"], "cli-1")
        result = yield self.cli("--json", "restconf", DEVICE_ID, "GET", "/data/example-system:missing")
        self.assertEqual(result.code, 1, result)
        self.assertEqual(json.loads(result.out)["status"], 404)
        self.assertEqual(result.err.strip(), "callhome-mux: the device answered HTTP 404")
