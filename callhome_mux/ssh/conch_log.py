"""
conch's own log lines, made cheap: see L{QuietLogger}.
"""

from __future__ import annotations

import time

from twisted.logger import Logger


class QuietLogger(Logger):
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

    Shared by all instances of a class (no source): C{__get__} returns it
    as is instead of binding a new logger to each instance.
    """

    def __get__(self, instance, owner=None) -> "QuietLogger":
        return self

    def debug(self, format=None, **kwargs) -> None:
        pass

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
