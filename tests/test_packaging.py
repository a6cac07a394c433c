"""A real, non-editable install carries the twistd plugin and the API document."""

import glob
import os
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class InstalledPackageTests(unittest.TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def command(self, executable, *args, path=None):
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        out, err, code = yield utils.getProcessOutputAndValue(executable, args, env=env, path=path)
        self.assertEqual(code, 0, (out + err).decode(errors="replace")[-2000:])
        return out.decode(errors="replace")

    @defer.inlineCallbacks
    def test_plugin_and_data_files_installed(self):
        venv = os.path.abspath(self.mktemp())
        # Dependencies come from the running environment; the package itself
        # is built and installed from this checkout, not in editable mode.
        yield self.command(sys.executable, "-m", "venv", "--system-site-packages", venv)
        python = os.path.join(venv, "bin", "python")
        yield self.command(python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", REPO)
        [site] = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
        self.assertTrue(os.path.isfile(os.path.join(site, "twisted", "plugins", "callhome_mux_plugin.py")))
        self.assertFalse(os.path.exists(os.path.join(site, "twisted", "plugins", "__init__.py")))
        self.assertTrue(os.path.isfile(os.path.join(site, "callhome_mux", "api", "openapi.json")))
        # Run from an empty directory, so nothing from the checkout is importable.
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        twistd = (python, "-c", "from twisted.scripts.twistd import run; run()")
        listing = yield self.command(*twistd, "--help", path=elsewhere)
        self.assertIn("callhome-mux", listing)
        where = yield self.command(python, "-c", "import callhome_mux; print(callhome_mux.__file__)", path=elsewhere)
        self.assertTrue(where.strip().startswith(site), where)
        usage = yield self.command(*twistd, "callhome-mux", "--help", path=elsewhere)
        self.assertIn("--listen", usage)
        self.assertIn("--state-dir", usage)
