"""What a handler can say besides "this attempt failed": Fail, RetryAfter,
retry_on, and a declared input type checked before it runs."""

from __future__ import annotations

import dataclasses
import sys
import typing
import uuid
from typing import Any

import pydantic
import pytest
from typing_extensions import TypedDict

from flowworker import Context, Fail, Flow, RetryAfter
from flowworker.daemon.claims import ClaimedTask, Outcome
from flowworker.daemon.executor import HandlerThreads, Limits, execute
from flowworker.errors import DefinitionError

flow = Flow("control", timeout=30)


class Order(pydantic.BaseModel):
    order_id: int
    sku: str = "none"


class Item(TypedDict):
    sku: str
    count: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


@flow.step()
async def declined(_input: Any, _ctx: Context) -> None:
    raise Fail("card declined")


@flow.step()
def rate_limited(_input: Any, _ctx: Context) -> None:
    raise RetryAfter(30, "429 from the payment API")


@flow.step(retry_on=(TimeoutError, ConnectionError))
async def picky(data: dict[str, Any], _ctx: Context) -> None:
    raise {"timeout": TimeoutError("slow"), "value": ValueError("bad")}[data["kind"]]


@flow.step()
async def any_error(_input: Any, _ctx: Context) -> None:
    raise ValueError("plain")


@flow.step()
async def typed(order: Order, _ctx: Context) -> dict[str, Any]:
    return {"is_model": isinstance(order, Order), "id": order.order_id}


@flow.step()
def typed_dict(item: Item, _ctx: Context) -> int:
    return item["count"]


@flow.step()
async def typed_dataclass(point: Point, _ctx: Context) -> int:
    return point.x + point.y


@flow.step()
async def untyped(data, _ctx):  # type: ignore[no-untyped-def]
    return data


def claimed(step: str, task_input: Any = None) -> ClaimedTask:
    return ClaimedTask(flow, uuid.uuid4(), 1, uuid.uuid4(), step, 0, 1, task_input, None, 30)


async def run(step: str, task_input: Any = None) -> Outcome:
    limits = Limits(threads=HandlerThreads(2, give_slot=lambda: None), max_output_bytes=1 << 20)
    return await execute(claimed(step, task_input), limits)


async def test_fail_fails_the_task_now() -> None:
    outcome = await run("declined")
    assert (outcome.kind, outcome.error, outcome.final, outcome.retry_after) == (
        "error", "Fail: card declined", True, None)


async def test_retry_after_asks_for_its_delay_and_is_not_final() -> None:
    outcome = await run("rate_limited")
    assert (outcome.kind, outcome.final, outcome.retry_after) == ("error", False, 30)
    assert outcome.error == "RetryAfter: 429 from the payment API"


def test_retry_after_is_bounded() -> None:
    with pytest.raises(ValueError, match="between 0 and 86400"):
        RetryAfter(86401)
    assert RetryAfter(1.6).seconds == 2


async def test_retry_on_retries_only_the_exceptions_it_names() -> None:
    retried = await run("picky", {"kind": "timeout"})
    assert (retried.kind, retried.final) == ("error", False)
    refused = await run("picky", {"kind": "value"})
    assert (refused.kind, refused.final) == ("error", True)
    assert refused.error == "ValueError: bad"


async def test_without_retry_on_every_exception_retries() -> None:
    outcome = await run("any_error")
    assert (outcome.kind, outcome.final) == ("error", False)


def test_retry_on_must_name_exception_classes() -> None:
    bad = Flow("bad_retry")
    with pytest.raises(DefinitionError, match="retry_on must be exception classes"):
        @bad.step(retry_on=("TimeoutError",))  # type: ignore[arg-type]
        async def s(_input: Any, _ctx: Context) -> None: ...
    with pytest.raises(DefinitionError, match="retry_on must be exception classes"):
        @bad.step(retry_on=(int,))  # type: ignore[arg-type]
        async def t(_input: Any, _ctx: Context) -> None: ...

    @bad.step(retry_on=KeyError)
    async def one(_input: Any, _ctx: Context) -> None: ...
    assert bad.steps["one"].retry_on == (KeyError,)


async def test_a_declared_model_arrives_validated() -> None:
    outcome = await run("typed", {"order_id": "42"})
    assert (outcome.kind, outcome.output_json) == ("completed", '{"is_model": true, "id": 42}')


async def test_an_invalid_input_fails_the_task_at_once_naming_the_field() -> None:
    outcome = await run("typed", {"sku": 7})
    assert (outcome.kind, outcome.final) == ("error", True)
    assert outcome.error is not None
    assert outcome.error.startswith("invalid input for Order: order_id: Field required")
    assert "sku: Input should be a valid string" in outcome.error
    for bad in (None, "a string", [1, 2]):
        refused = await run("typed", bad)
        assert (refused.kind, refused.final) == ("error", True), bad


async def test_typed_dicts_and_dataclasses_are_checked_too() -> None:
    assert (await run("typed_dict", {"sku": "a", "count": "3"})).output_json == "3"
    assert (await run("typed_dict", {"sku": "a"})).final
    assert (await run("typed_dataclass", {"x": 1, "y": 2})).output_json == "3"
    assert (await run("typed_dataclass", {"x": "one"})).final


async def test_undeclared_or_plain_types_pass_the_input_as_it_is() -> None:
    assert flow.steps["untyped"].input_adapter is None
    assert flow.steps["picky"].input_adapter is None  # dict[str, Any]: not checked
    outcome = await run("untyped", {"anything": [1, "x"]})
    assert outcome.output_json == '{"anything": [1, "x"]}'


class Plain(typing.TypedDict):
    sku: str


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="typing.TypedDict is fine from 3.12")
def test_a_type_pydantic_cannot_check_fails_the_definition_naming_the_step() -> None:
    bad = Flow("bad_type")
    with pytest.raises(DefinitionError, match=r"step 'plain': its input type Plain cannot be "
                                              r"checked: Please use `typing_extensions.TypedDict`"):
        @bad.step()
        async def plain(item: Plain, _ctx: Context) -> None: ...
    assert bad.steps == {}
