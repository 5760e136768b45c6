"""RETRAIN_FORWARD_PASSES, which the journeys set to run several forward passes on one core."""

import pytest

from retrain.errors import UserError
from retrain.runtime import devices


@pytest.mark.timeout(60)
def test_the_variable_sets_the_passes_and_unset_leaves_the_cores(monkeypatch):
    monkeypatch.setenv("RETRAIN_FORWARD_PASSES", "3")
    assert devices.forward_pass_cores() == 3
    monkeypatch.delenv("RETRAIN_FORWARD_PASSES")
    assert devices.forward_pass_cores() == devices.usable_cores()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_value_that_is_not_a_count_is_a_user_error_naming_it(monkeypatch, value):
    monkeypatch.setenv("RETRAIN_FORWARD_PASSES", value)
    with pytest.raises(UserError, match=f"RETRAIN_FORWARD_PASSES='{value}'.*unset it"):
        devices.forward_pass_cores()
