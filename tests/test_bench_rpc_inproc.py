"""bench/rpc_inproc.py still runs against this checkout's SSH and NETCONF layers (it builds them by hand)."""

import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RpcInprocSmokeTests(unittest.TestCase):
    def test_a_short_run_prints_its_figures(self):
        # The bench wires KeepaliveMonitor, ChannelTransport and the SSH
        # transport itself: a change of their signatures must show here, not
        # on the day someone measures.
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "rpc_inproc.py"), "--reps", "1", "--batches", "3"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn("pipelined", result.stdout)
        self.assertIn("us/RPC", result.stdout)
