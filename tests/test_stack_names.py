"""Stack names that cannot collide: distinct tasks (and clusters) get distinct, valid CloudFormation names."""

from __future__ import annotations

import re

from dth_operator.stacks import stack_name

VALID = re.compile(r"^[A-Za-z][-A-Za-z0-9]{0,127}$")


def test_names_that_read_alike_after_the_dashes_differ() -> None:
    assert stack_name("default", "a-b", "c") != stack_name("default", "a", "b-c")


def test_names_past_128_characters_differ_after_truncation() -> None:
    namespace = "n" * 63
    first, second = stack_name("default", namespace, "x" * 200 + "1"), stack_name("default", namespace, "x" * 200 + "2")
    assert first != second
    assert VALID.match(first) and VALID.match(second)


def test_two_clusters_name_the_same_task_differently_and_readably() -> None:
    east, west = stack_name("east", "team", "logs.copy"), stack_name("west", "team", "logs.copy")
    assert east != west
    assert east.startswith("dth-team-logs-copy-") and VALID.match(east)
    assert stack_name("east", "team", "logs.copy") == east  # deterministic: a restarted operator finds it again
