# A thin shim: metadata and dependencies live in setup.cfg.  The one thing
# setup.cfg cannot say is the Twisted plugin: twisted/plugins has no
# __init__.py (Twisted requires that), so find_packages() does not see it
# and it is named here, the way Twisted's plugin documentation does.
from setuptools import find_packages, setup

setup(packages=find_packages(include=["callhome_mux", "callhome_mux.*"]) + ["twisted.plugins"])
