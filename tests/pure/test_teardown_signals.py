"""Teardown helpers of harness.cleanup that need no root: deferred signals and the leftovers report."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from harness.cleanup import RunState, leftovers, signals_deferred

pytestmark = pytest.mark.pure


def test_ctrl_c_inside_a_deferred_block_arrives_after_it():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C does not cut the block short either
            done.append("teardown finished")
    assert done == ["teardown finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_deferred_blocks_deliver_only_when_the_outermost_ends():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
            steps.append("inner ended without an interrupt")
    assert steps == ["inner ended without an interrupt"]


def test_sigterm_with_the_default_action_becomes_system_exit_after_the_block():
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit) as exc:
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
        assert exc.value.code == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, old)


def test_no_signal_no_interrupt_and_handlers_are_restored():
    with signals_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_leftovers_lists_the_state_file_and_recorded_processes_that_still_run(tmp_path):
    proc = subprocess.Popen(["sleep", "30"])
    try:
        st = RunState("lft1", tmp_path)
        st.add_pid(proc.pid, ["sleep", "30"])
        left = leftovers("lft1", tmp_path)
        assert left == [f"run lft1: state file {st.path}", f"run lft1: process {proc.pid} (sleep 30)"]
        proc.kill()
        proc.wait()
        st.remove()
        assert leftovers("lft1", tmp_path) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_handler_set_inside_a_deferred_block_is_the_one_in_place_after_it():
    from harness.cleanup import set_signal_handler

    def mine(_s, _f):
        raise SystemExit(99)

    old = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(SystemExit) as exc:
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                assert set_signal_handler(signal.SIGTERM, signal.SIG_DFL) is mine  # e.g. a closing topology
        assert exc.value.code == 128 + signal.SIGTERM  # delivered to the restored default action
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)


def test_after_the_first_ctrl_c_of_a_run_later_ones_do_not_interrupt_its_teardown():
    from harness import cleanup

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cleanup.register_teardown(_no_teardown)  # a run is open
    try:
        cleanup.latch_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a bytecode boundary for the handler to run
        steps = []
        os.kill(os.getpid(), signal.SIGINT)  # e.g. while the datapath closes: nothing is raised
        steps.append("datapath closed")
        with signals_deferred("teardown"):
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("topology closed")
        assert steps == ["datapath closed", "topology closed"]  # and no KeyboardInterrupt after the block
        cleanup.unlatch_ctrl_c()
        assert signal.getsignal(signal.SIGINT) is cleanup.stop_on_first_ctrl_c  # still stopping: stays
    finally:
        cleanup.unregister_teardown(_no_teardown)
        cleanup._stopping = False
        cleanup.unlatch_ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _no_teardown() -> None:
    pass
