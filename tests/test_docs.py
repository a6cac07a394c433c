"""Documentation that is generated from the code stays current."""

import os

from twisted.trial import unittest

from callhome_mux.config_reference import render

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


class ConfigurationReferenceTests(unittest.TestCase):
    def test_reference_is_current(self):
        with open(os.path.join(DOCS, "configuration.rst")) as handle:
            written = handle.read()
        self.assertEqual(
            written, render(), "docs/configuration.rst is stale: python -m callhome_mux.config_reference > docs/configuration.rst"
        )

    def test_every_setting_is_documented(self):
        self.assertNotIn("(undocumented)", render())
