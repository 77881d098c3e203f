"""periodic.py: when each action is due, against the trainer's conditions
written out as they stood before the actions were one mechanism, and the
one pause of the clock around the actions due together."""

import itertools

import jax.numpy as jnp

from sam_jax import periodic


def test_every_steps_is_due_where_the_trainers_conditions_were():
    for n, total in itertools.product((1, 3, 7, 10), (9, 10, 21)):
        report = periodic.every_steps(n, at_end=total)  # progress lines
        checkpoint = periodic.every_steps(n)
        stability = periodic.every_steps(n, at_start=True)
        for done in range(1, total + 1):
            assert report(done) == (done % n == 0 or done == total), (n, total, done)
            assert checkpoint(done) == (done % n == 0)
            assert stability(done) == (done % n == 0)
        assert (report(0), checkpoint(0), stability(0)) == (False, False, True)
    assert not any(periodic.every_steps(0)(done) for done in range(1, 30))


def test_every_epochs_is_due_where_the_trainers_conditions_were():
    per_epoch = 5
    for n, total in itertools.product((1, 2, 3), (20, 23, 30)):
        evaluation = periodic.every_epochs(n, per_epoch, except_at=total)
        sharpness = periodic.every_epochs(n, per_epoch, first=True)
        for done in range(0, total + 1):
            epoch_end = done > 0 and done % per_epoch == 0
            epoch = done // per_epoch
            assert evaluation(done) == (epoch_end and done != total and epoch % n == 0)
            assert sharpness(done) == (epoch_end and (epoch == 1 or epoch % n == 0))
    assert not any(periodic.every_epochs(0, per_epoch, first=True)(done)
                   for done in range(30))


class FakeClock:
    def __init__(self):
        self.calls = []

    def pause(self):
        self.calls.append("pause")

    def start(self):
        self.calls.append("start")


def test_the_due_actions_run_in_order_inside_one_pause():
    ran = []

    def action(name, every):
        def run(state, done):
            ran.append((name, done))
            return state + 1
        return periodic.Action(name, periodic.every_steps(every), run)

    actions = [action("a", 2), action("b", 3), action("c", 2)]
    clock = FakeClock()
    state = jnp.zeros([])
    assert periodic.run_due(actions, state, 1, clock) is state  # none due
    assert clock.calls == [] and ran == []
    assert int(periodic.run_due(actions, state, 6, clock)) == 3
    assert ran == [("a", 6), ("b", 6), ("c", 6)]
    assert clock.calls == ["pause", "start"]


def test_the_stopwatch_leaves_out_its_pauses():
    watch = periodic.Stopwatch(10.0)
    assert watch.read() == 10.0  # not started: no time passes
    watch.start()
    first = watch.read()
    assert first >= 10.0
    watch.pause()
    paused = watch.read()
    assert watch.read() == paused >= first
