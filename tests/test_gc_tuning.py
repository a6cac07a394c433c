"""The collector's settings: applied once the service runs, undone when it stops."""

import gc

from twisted.internet import defer
from twisted.trial import unittest

from callhome_mux.config import config_from_document
from callhome_mux.gc_tuning import CollectorTuning, ProcessSettings
from callhome_mux.service import CallHomeService
from callhome_mux.settings import ConfigError


class CollectorTuningTests(unittest.TestCase):
    def setUp(self):
        self.addCleanup(gc.set_threshold, *gc.get_threshold())

    def test_apply_and_undo(self):
        gc.set_threshold(700, 10, 10)
        frozen_before = gc.get_freeze_count()
        tuning = CollectorTuning(ProcessSettings(gc_young_threshold=5000, gc_freeze_after_start=True))
        tuning.apply()
        self.assertEqual(gc.get_threshold(), (5000, 10, 10))
        self.assertGreater(gc.get_freeze_count(), frozen_before)
        tuning.apply()  # once only
        tuning.undo()
        self.assertEqual(gc.get_threshold(), (700, 10, 10))
        self.assertEqual(gc.get_freeze_count(), 0)

    def test_zero_and_false_change_nothing(self):
        gc.set_threshold(700, 10, 10)
        tuning = CollectorTuning(ProcessSettings(gc_young_threshold=0, gc_freeze_after_start=False))
        tuning.apply()
        self.assertEqual(gc.get_threshold(), (700, 10, 10))
        self.assertEqual(gc.get_freeze_count(), 0)
        tuning.undo()

    def test_negative_threshold_refused(self):
        with self.assertRaises(ConfigError):
            config_from_document({"process": {"gc_young_threshold": -1}})


class ServiceAppliesTuningTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_started_service_tunes_and_stopped_service_restores(self):
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        gc.set_threshold(700, 10, 10)
        document = {"listen": ["tcp:0:interface=127.0.0.1"], "state_dir": self.mktemp(),
                    "process": {"gc_young_threshold": 12345}}
        service = CallHomeService(config_from_document(document), install_default_handlers=False)
        service.startService()
        yield service.whenStarted()
        self.assertEqual(gc.get_threshold(), (12345, 10, 10))
        self.assertGreater(gc.get_freeze_count(), 0)
        yield service.stopService()
        self.assertEqual(gc.get_threshold(), (700, 10, 10))
        self.assertEqual(gc.get_freeze_count(), 0)
