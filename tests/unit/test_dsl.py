"""Flow definitions: slugs, dependencies and the errors raised at definition time."""

from __future__ import annotations

from typing import Any

import pytest

from flowworker import Context, Flow
from flowworker.errors import ConfigurationError, DefinitionError


def test_step_slug_is_the_function_name_unless_given() -> None:
    flow = Flow("names")

    @flow.step()
    def first(data: Any, ctx: Context) -> None: ...

    @flow.step(slug="renamed", depends_on=["first"])
    def second(deps: Any, ctx: Context) -> None: ...

    assert list(flow.steps) == ["first", "renamed"]
    assert flow.steps["renamed"].handler is second
    assert flow.steps["renamed"].deps == ("first",)


def test_decorators_return_the_handler_unchanged() -> None:
    flow = Flow("plain")

    def handler(data: Any, ctx: Context) -> int:
        return 7

    assert flow.step()(handler) is handler
    assert handler(None, None) == 7  # type: ignore[arg-type]


def test_depends_on_by_name_and_by_function_give_the_same_deps() -> None:
    flow = Flow("deps")

    @flow.step()
    def a(data: Any, ctx: Context) -> None: ...

    @flow.step(slug="b_step")
    def b(data: Any, ctx: Context) -> None: ...

    @flow.step(depends_on=["a", "b_step"])
    def by_name(deps: Any, ctx: Context) -> None: ...

    @flow.step(depends_on=[a, b])
    def by_function(deps: Any, ctx: Context) -> None: ...

    assert flow.steps["by_name"].deps == ("a", "b_step")
    assert flow.steps["by_function"].deps == ("a", "b_step")


def test_a_single_string_is_one_dep_and_repeats_collapse() -> None:
    flow = Flow("single_dep")

    @flow.step()
    def a(data: Any, ctx: Context) -> None: ...

    @flow.step(depends_on="a")
    def b(deps: Any, ctx: Context) -> None: ...

    @flow.step(depends_on=["a", a, "a"])
    def c(deps: Any, ctx: Context) -> None: ...

    assert flow.steps["b"].deps == ("a",)
    assert flow.steps["c"].deps == ("a",)


def test_step_types_async_detection_and_options() -> None:
    flow = Flow("kinds", timeout=60)

    @flow.step(timeout=5, max_attempts=2, base_delay=0, start_delay=3)
    async def root(data: Any, ctx: Context) -> list[int]:
        return [1, 2]

    @flow.map(over=root)
    def each(item: int, ctx: Context) -> int:
        return item

    @flow.map(slug="over_input")
    def over_input(item: int, ctx: Context) -> int:
        return item

    assert flow.steps["root"].step_type == "single"
    assert flow.steps["root"].is_async
    assert not flow.steps["each"].is_async
    assert (flow.steps["each"].step_type, flow.steps["each"].deps) == ("map", ("root",))
    assert flow.steps["over_input"].deps == ()
    root_step = flow.steps["root"]
    assert (root_step.max_attempts, root_step.base_delay, root_step.start_delay) == (2, 0, 3)
    assert flow.timeout_of("root") == 5
    assert flow.timeout_of("each") == 60


def test_self_dependency_is_a_cycle_naming_the_step() -> None:
    flow = Flow("cycle")
    with pytest.raises(DefinitionError, match=r"step 'loop' depends on itself \(a cycle\)"):
        @flow.step(depends_on=["loop"])
        def loop(deps: Any, ctx: Context) -> None: ...
    assert flow.steps == {}


def test_a_cycle_through_another_step_cannot_be_written() -> None:
    # Deps must be defined first, so `a -> b -> a` fails when `a` names `b`.
    flow = Flow("cycle_two")
    with pytest.raises(DefinitionError, match=r"step 'a' depends on unknown step 'b'"):
        @flow.step(depends_on=["b"])
        def a(deps: Any, ctx: Context) -> None: ...


def test_unknown_dependency_names_the_step_and_the_dep() -> None:
    flow = Flow("unknown_dep")
    with pytest.raises(DefinitionError,
                       match=r"flow 'unknown_dep': step 'late' depends on unknown step 'nope'"):
        @flow.step(depends_on=["nope"])
        def late(deps: Any, ctx: Context) -> None: ...


def test_depending_on_a_function_of_another_flow_names_both() -> None:
    other = Flow("other")

    @other.step()
    def elsewhere(data: Any, ctx: Context) -> None: ...

    flow = Flow("mine")
    with pytest.raises(DefinitionError,
                       match=r"step 'here' depends on 'elsewhere', which is not a step"):
        @flow.step(depends_on=[elsewhere])
        def here(deps: Any, ctx: Context) -> None: ...


def test_duplicate_slug_names_the_step() -> None:
    flow = Flow("dupes")

    @flow.step()
    def twice(data: Any, ctx: Context) -> None: ...

    with pytest.raises(DefinitionError, match=r"step 'twice' is defined twice"):
        @flow.step(slug="twice")
        def other(data: Any, ctx: Context) -> None: ...
    assert flow.steps["twice"].handler is twice


@pytest.mark.parametrize("slug", ["Upper", "1digit", "has-dash", "", "a" * 49, "sp ace", "é"])
def test_bad_flow_slugs_are_rejected(slug: str) -> None:
    with pytest.raises(DefinitionError, match=r"invalid flow slug"):
        Flow(slug)


@pytest.mark.parametrize("slug", ["a", "a" * 48, "snake_case_1"])
def test_good_flow_slugs_are_kept(slug: str) -> None:
    assert Flow(slug).slug == slug


@pytest.mark.parametrize("slug", ["Bad", "with-dash", "9lives"])
def test_bad_step_slugs_name_the_flow_and_the_slug(slug: str) -> None:
    flow = Flow("slugs")
    with pytest.raises(DefinitionError, match=rf"invalid step slug in flow 'slugs'.*{slug!r}"):
        flow.step(slug=slug)(lambda data, ctx: None)


def test_a_bad_function_name_needs_slug() -> None:
    flow = Flow("fn_names")

    def CamelCase(data: Any, ctx: Context) -> None: ...  # noqa: N802

    with pytest.raises(DefinitionError, match=r"'CamelCase'"):
        flow.step()(CamelCase)
    flow.step(slug="camel_case")(CamelCase)
    assert list(flow.steps) == ["camel_case"]


def test_map_with_two_deps_names_the_step() -> None:
    flow = Flow("two_deps")

    @flow.step()
    def a(data: Any, ctx: Context) -> list[int]:
        return []

    @flow.step()
    def b(data: Any, ctx: Context) -> list[int]:
        return []

    with pytest.raises(DefinitionError, match=r"step 'both' is a map step with 2 deps"):
        @flow.map(over=["a", "b"])  # type: ignore[arg-type]
        def both(item: Any, ctx: Context) -> None: ...
    assert "both" not in flow.steps


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0},
         r"step 'opt': max_attempts must be an integer between 1 and 1000, not 0"),
        ({"max_attempts": 1001}, r"max_attempts must be an integer between 1 and 1000"),
        ({"timeout": 0}, r"step 'opt': timeout must be an integer between 1 and 604800"),
        ({"timeout": 2**31 - 1}, r"timeout must be an integer between 1 and 604800"),
        ({"base_delay": -1}, r"step 'opt': base_delay must be an integer between 0 and 86400"),
        ({"base_delay": 86401}, r"base_delay must be an integer between 0 and 86400"),
        ({"start_delay": -5}, r"step 'opt': start_delay must be an integer between 0 and"),
        ({"start_delay": 2592001}, r"start_delay must be an integer between 0 and 2592000"),
        ({"timeout": 1.5}, r"step 'opt': timeout must be an integer between 1 and 604800, "
                           r"not 1.5"),
        ({"timeout": "10"}, r"timeout must be an integer between 1 and 604800, not '10'"),
        ({"max_attempts": True}, r"max_attempts must be an integer between 1 and 1000, "
                                 r"not True"),
    ],
)
def test_bad_step_options_name_the_step(options: dict[str, Any], message: str) -> None:
    flow = Flow("options")
    with pytest.raises(DefinitionError, match=message):
        @flow.step(**options)
        def opt(data: Any, ctx: Context) -> None: ...
    assert flow.steps == {}


def test_options_at_their_bounds_are_accepted() -> None:
    flow = Flow("edges", max_attempts=1000, base_delay=86400, timeout=604800)

    @flow.step(max_attempts=1, base_delay=0, timeout=1, start_delay=2592000)
    def opt(data: Any, ctx: Context) -> None: ...
    assert flow.steps["opt"].start_delay == 2592000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, r"flow 'f': max_attempts must be an integer between 1 and 1000"),
        ({"base_delay": -1}, r"flow 'f': base_delay must be an integer between 0 and 86400"),
        ({"timeout": 0}, r"flow 'f': timeout must be an integer between 1 and 604800"),
        ({"timeout": 2**31 - 1}, r"flow 'f': timeout must be an integer between 1 and 604800"),
    ],
)
def test_bad_flow_options_name_the_flow(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        Flow("f", **options)


def test_a_handler_must_be_callable() -> None:
    flow = Flow("not_callable")
    with pytest.raises(DefinitionError, match=r"must be callable"):
        flow.step()(42)  # type: ignore[type-var]


def test_definition_errors_are_configuration_errors_with_exit_code_2() -> None:
    assert issubclass(DefinitionError, ConfigurationError)
    assert DefinitionError().exit_code == 2
    assert str(DefinitionError()) == "The flow definition is invalid."


def test_a_wait_step_has_no_handler_and_is_a_dependency_like_any_step() -> None:
    flow = Flow("approvals")

    @flow.step()
    def charge(data: Any, ctx: Context) -> None: ...

    approved = flow.wait("approved", depends_on=[charge], timeout=3600)
    review = flow.wait("review", depends_on=["approved"], options=["approve", "reject"],
                       fail_on=["reject"])

    @flow.step(depends_on=[approved, review])
    def ship(deps: Any, ctx: Context) -> None: ...

    assert (approved, review) == ("approved", "review")
    step = flow.steps["review"]
    assert (step.step_type, step.handler, step.deps) == ("wait", None, ("approved",))
    assert (step.options, step.fail_on) == (("approve", "reject"), ("reject",))
    assert flow.steps["ship"].deps == ("approved", "review")
    assert flow.steps["approved"].timeout == 3600


@pytest.mark.parametrize(("options", "fail_on", "message"), [
    ([], None, "options must not be empty"),
    (["ok"], ["no"], r"fail_on \['no'\] must be some of its options \['ok'\]"),
    (None, ["no"], r"fail_on \['no'\] must be some of its options \[\]"),
    (["Not OK"], None, "invalid option of flow 'gates': wait step 'g'"),
])
def test_bad_gates_are_refused_naming_the_step(options: list[str] | None,
                                              fail_on: list[str] | None, message: str) -> None:
    flow = Flow("gates")
    with pytest.raises(DefinitionError, match=message):
        flow.wait("g", options=options, fail_on=fail_on)
    assert flow.steps == {}
