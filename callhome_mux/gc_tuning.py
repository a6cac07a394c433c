"""
The garbage collector's settings while the service runs (section C{[process]}).

A call-home server holds thousands of long-lived session objects and, in a
storm, allocates a few hundred more per session.  With Python's defaults
the collector then runs its young pass every 700 allocations and a full
pass over everything alive (the ~100,000 objects of the code loaded at
start included) every few hundred sessions: ~110 us of CPU per session in
an SSH storm of 1000 (bench/storm.py with gc.callbacks), nearly all of it
finding nothing, since the sessions live on.  C{gc.freeze()} after start
puts what was loaded at start out of the collector's reach, and a larger
young threshold makes the passes fewer: ~15 us per session.

Cycles are still collected, only in larger batches.  The service undoes
both when it stops (an application embedding it gets its own settings
back).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Optional, Tuple

from callhome_mux.settings import at_least


@dataclass(frozen=True)
class ProcessSettings:
    #: Allocations between two young-generation collections (Python's
    #: default is 700); 0 leaves Python's thresholds as they are.
    gc_young_threshold: int = 10000
    #: Once started, move every object then alive out of the collector's
    #: reach (C{gc.freeze()}): the modules and configuration loaded at start.
    gc_freeze_after_start: bool = True

    def __post_init__(self):
        at_least(self.gc_young_threshold, 0, "gc_young_threshold")


class CollectorTuning:
    """Applies L{ProcessSettings} once the service has started; L{undo} when it stops."""

    def __init__(self, settings: ProcessSettings):
        self.settings = settings
        self._previous: Optional[Tuple[int, int, int]] = None
        self._froze = False

    def apply(self) -> None:
        if self._previous is not None or self._froze:
            return
        if self.settings.gc_young_threshold:
            self._previous = gc.get_threshold()
            gc.set_threshold(self.settings.gc_young_threshold, *self._previous[1:])
        if self.settings.gc_freeze_after_start:
            gc.freeze()
            self._froze = True

    def undo(self) -> None:
        if self._froze:
            gc.unfreeze()
            self._froze = False
        if self._previous is not None:
            gc.set_threshold(*self._previous)
            self._previous = None
