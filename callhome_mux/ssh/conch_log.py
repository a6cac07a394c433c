"""
conch's own log lines, made cheap: see L{QuietLogger}.
"""

from __future__ import annotations

import time

from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure


class QuietLogger:
    """
    conch's SSH classes log several lines per connection (key exchange,
    service start, each auth attempt, channel open, requests), most at debug
    level.  twistd drops debug events anyway, but only after Logger.emit
    has built each one and sorted the log levels to check it (conch's
    Logger is also re-bound per attribute access): about 5% of the server's
    CPU in a call-home storm (bench/storm.py --py-spy), the channel open's
    info line alone ~20 us per connection.  This logger drops debug lines at
    the source and emits the others (the log keeps them) without the
    per-call level check, and without building them at all when no log
    observer listens.  C{[ssh] conch_debug_log} restores conch's own logger.

    Shared by all instances of a class (no source).  It is not a
    L{Logger}: a Logger is a descriptor, so each C{self._log} in conch (~9
    per call home) would be a Python call to C{__get__}; a plain class
    attribute is a dictionary look-up.  It offers what conch calls:
    C{debug}, C{info}, C{warn}, C{error}, C{critical}, C{failure}, C{emit}.
    """

    __slots__ = ("namespace", "source", "observer")

    def __init__(self, namespace: str, source=None, observer=None):
        self.namespace = namespace
        self.source = source
        self.observer = observer if observer is not None else globalLogPublisher

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.namespace!r}>"

    def debug(self, format=None, **kwargs) -> None:
        pass

    def info(self, format=None, **kwargs) -> None:
        self.emit(LogLevel.info, format, **kwargs)

    def warn(self, format=None, **kwargs) -> None:
        self.emit(LogLevel.warn, format, **kwargs)

    def error(self, format=None, **kwargs) -> None:
        self.emit(LogLevel.error, format, **kwargs)

    def critical(self, format=None, **kwargs) -> None:
        self.emit(LogLevel.critical, format, **kwargs)

    def failure(self, format, failure=None, level=LogLevel.critical, **kwargs) -> None:
        # As Logger.failure: the exception in flight when none is given.
        if failure is None:
            failure = Failure()
        self.emit(level, format, log_failure=failure, **kwargs)

    def emit(self, level, format=None, **kwargs) -> None:
        observer = self.observer
        if not getattr(observer, "_observers", True):
            return  # a LogPublisher nobody listens to
        kwargs.update(
            log_logger=self, log_level=level, log_namespace=self.namespace, log_source=None,
            log_format=format, log_time=time.time(),
        )
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, observer))
        observer(kwargs)


def keep_conch_log(instance) -> None:
    """Give C{instance} conch's own logger back ({[ssh] conch_debug_log})."""
    cls = type(instance)
    instance._log = Logger(namespace=f"{cls.__module__}.{cls.__name__}", source=instance)
