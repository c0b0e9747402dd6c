"""Failure lines a person can act on: the user's exception, without Dagster's wrapper."""

import sys

import dagster as dg
from dagster._core.errors import DagsterExecutionStepExecutionError
from dagster._utils.error import serializable_error_info_from_exc_info

from e2i_platform.lib.gates import GateClosed
from e2i_platform.ops.progress import failure_text


def _info(raise_it):
    try:
        raise_it()
    except Exception:
        return serializable_error_info_from_exc_info(sys.exc_info())


def _wrapped(cause: Exception):
    def raise_it():
        try:
            raise cause
        except Exception as inner:
            raise DagsterExecutionStepExecutionError(
                'Error occurred while executing op "x":',
                user_exception=inner,
                original_exc_info=sys.exc_info(),
                step_key="x",
                op_name="x",
                op_def_name="x",
            ) from inner

    return raise_it


def _raise(error):
    def raise_it():
        raise error

    return raise_it


def test_a_failure_line_shows_the_users_error_whole():
    wrapped = _info(_wrapped(ValueError("bad\nvalue")))
    assert wrapped.message.startswith("dagster._core.errors.DagsterExecutionStepExecutionError")
    assert failure_text(wrapped) == "ValueError: bad value"
    assert failure_text(_info(_wrapped(dg.Failure("rollback refused: none")))) == (
        "rollback refused: none"
    )
    assert failure_text(_info(_raise(GateClosed("x refused to run:\n  gate y")))) == (
        "x refused to run: gate y"
    )
    assert failure_text(None) == "no error recorded"


def test_a_step_waiting_for_its_pool_says_so():
    from dagster._core.events import DagsterEvent, EngineEventData

    from e2i_platform.ops.progress import event_line

    def engine(message: str) -> DagsterEvent:
        return DagsterEvent(
            event_type_value="ENGINE_EVENT",
            job_name="e2i_main",
            step_key="online_features",
            message=message,
            event_specific_data=EngineEventData(metadata={"pool": dg.MetadataValue.pool("x")}),
        )

    assert event_line(engine("Step blocked by limit for pool online_store")) == (
        "WAIT   online_features: pool online_store is held by another run; waiting for it"
    )
    # Repeats ("still blocked") and other engine events stay quiet.
    assert event_line(engine("Step still blocked by limit for pool online_store")) is None
    assert event_line(engine("Started process for run (pid: 1).")) is None
