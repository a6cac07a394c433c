"""bench/_server.py --kind tls: the TLS section it writes keeps what --set gives (storm.py --tls-groups)."""

import argparse
import os
import sys
import tempfile

from twisted.trial.unittest import TestCase

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _server  # noqa: E402
from callhome_mux.testing.fleet import write_pki  # noqa: E402


class BenchTLSServerTests(TestCase):
    def _service(self, assignments):
        pki = tempfile.mkdtemp(prefix="callhome-bench-pki-")
        paths = write_pki(pki)
        args = argparse.Namespace(
            kind="tls", devices=1, port=0, pki=pki, ca_fingerprint=paths["ca_fingerprint"],
            set=assignments, silence_timeout=0.0,
        )
        service, tls_paths, _ = _server.build_service(args)
        return service.config.tls, tls_paths

    def test_set_groups_reach_the_service(self):
        """storm.py --tls-groups X25519 passes --set=tls.groups=[...]; it used to be overwritten (OpenSSL's defaults ran)."""
        tls, paths = self._service(['tls.groups=["X25519"]'])
        self.assertEqual(tls.groups, ("X25519",))
        self.assertEqual(tls.certificate_file, paths["manager.crt"])
        self.assertEqual(tls.trust_anchor_files, (paths["ca.crt"],))

    def test_without_set_the_defaults_stay(self):
        tls, paths = self._service(None)
        self.assertEqual(tls.groups, ())
        self.assertEqual(tls.private_key_file, paths["manager.key"])


class FloorCpuOfTests(TestCase):
    def test_floor_times_what_it_runs(self):
        """storm.py --cpu-of: OpenSSL and Twisted targets are timed in the TLS floor too, callhome_mux's only in ours."""
        from bench.storm import floor_cpu_of

        targets = [
            "OpenSSL.SSL:Connection.do_handshake",
            "callhome_mux.tls.verify:CertificateVerifier.verify_connection",
            "twisted.protocols.tls:TLSMemoryBIOProtocol.dataReceived",
            "callhome_mux:main",
        ]
        self.assertEqual(floor_cpu_of(targets), [targets[0], targets[2]])

    def test_floor_stats_carry_the_timings(self):
        """bench/floor_tls.py times its --cpu-of targets with bench/_server.py's wrapper (same CPU_OF table)."""
        from bench import floor_tls

        with open(floor_tls.__file__) as handle:
            source = handle.read()
        self.assertIn("time_calls(args.cpu_of)", source)
        self.assertIn('"cpu_of": CPU_OF', source)
