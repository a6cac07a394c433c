"""Shared timers: the times and order of callLater, one reactor timer, none left when all are cancelled."""

from twisted.internet import task
from twisted.trial import unittest

from callhome_mux.timers import SharedTimers, shared_timers


class SharedTimersTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.timers = SharedTimers(self.clock)
        self.ran = []

    def test_exact_times_and_order_on_one_reactor_timer(self):
        self.timers.callLater(2.0, self.ran.append, "b")
        self.timers.callLater(1.0, self.ran.append, "a")
        self.timers.callLater(2.0, self.ran.append, "c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.999)
        self.assertEqual(self.ran, [])
        self.clock.advance(0.001)
        self.assertEqual(self.ran, ["a"])
        self.clock.advance(1.0)
        self.assertEqual(self.ran, ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.timers), 0)

    def test_call_at_a_time(self):
        clock = task.Clock()
        timers = SharedTimers(clock)
        clock.advance(0.25)
        ran = []
        at = timers.callAt(1.0, ran.append, "at")
        timers.callLater(0.75, ran.append, "later")
        self.assertEqual(at.getTime(), 1.0)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.75 - 1e-9)
        self.assertEqual(ran, [])
        clock.advance(1e-9)
        self.assertEqual(ran, ["at", "later"])  # same time: in the order started
        timers.callAt(0.5, ran.append, "past")
        clock.advance(0)
        self.assertEqual(ran, ["at", "later", "past"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel_and_active(self):
        first = self.timers.callLater(1.0, self.ran.append, "first")
        second = self.timers.callLater(3.0, self.ran.append, "second")
        self.assertTrue(first.active())
        self.assertEqual(first.getTime(), 1.0)
        first.cancel()
        first.cancel()  # twice is fine
        self.assertFalse(first.active())
        self.clock.advance(3.0)
        self.assertEqual(self.ran, ["second"])
        self.assertFalse(second.active())
        second.cancel()  # after it ran: nothing

    def test_no_reactor_timer_left_when_all_are_cancelled(self):
        calls = [self.timers.callLater(30.0, self.ran.append, n) for n in range(100)]
        for call in calls:
            call.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(self.ran, [])

    def test_cancelled_entries_are_compacted(self):
        keep = self.timers.callLater(50.0, self.ran.append, "kept")
        for n in range(1000):
            self.timers.callLater(10.0, self.ran.append, n).cancel()
        self.assertLess(len(self.timers._heap), 200)
        self.clock.advance(50)
        self.assertEqual(self.ran, ["kept"])
        self.assertFalse(keep.active())

    def test_earlier_timer_reschedules(self):
        self.timers.callLater(10.0, self.ran.append, "late")
        self.timers.callLater(1.0, self.ran.append, "early")
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.ran, ["early"])
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 10.0)

    def test_timers_started_by_a_callback_run_after_it(self):
        def rearm():
            self.ran.append("rearm")
            self.timers.callLater(0, self.ran.append, "again")
            self.timers.callLater(0.5, self.ran.append, "later")
            self.assertEqual(self.ran, ["rearm"])

        self.timers.callLater(1.0, rearm)
        self.timers.callLater(2.0, self.ran.append, "last")
        # As with Clock.callLater: a call due now runs within the same advance.
        self.clock.advance(1.0)
        self.assertEqual(self.ran, ["rearm", "again"])
        self.clock.advance(0.5)
        self.assertEqual(self.ran, ["rearm", "again", "later"])
        self.clock.advance(0.5)
        self.assertEqual(self.ran, ["rearm", "again", "later", "last"])

    def test_a_failing_callback_is_logged_and_the_others_run(self):
        def boom():
            raise ZeroDivisionError("boom")

        self.timers.callLater(1.0, boom)
        self.timers.callLater(1.0, self.ran.append, "after")
        self.clock.advance(1.0)
        self.assertEqual(self.ran, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_one_per_clock(self):
        other = task.Clock()
        self.assertIs(shared_timers(self.clock), shared_timers(self.clock))
        self.assertIsNot(shared_timers(self.clock), shared_timers(other))

    def test_one_per_clock_when_asked_in_turns(self):
        # The last clock's timers are kept at hand: asking for another
        # clock in between must still give each clock its own.
        other = task.Clock()
        mine, theirs = shared_timers(self.clock), shared_timers(other)
        for _ in range(3):
            self.assertIs(shared_timers(self.clock), mine)
            self.assertIs(shared_timers(self.clock), mine)
            self.assertIs(shared_timers(other), theirs)
        self.assertIs(mine._clock, self.clock)
        self.assertIs(theirs._clock, other)

    def test_the_clock_asked_last_is_answered_without_a_lookup(self):
        from callhome_mux import timers as timers_module

        mine = shared_timers(self.clock)

        class NoLookups(dict):
            def get(self, key, default=None):
                raise AssertionError("looked up again")

        self.patch(timers_module, "_BY_CLOCK", NoLookups())
        self.assertIs(shared_timers(self.clock), mine)
