"""Chained and linked resolve steps: which ones get the previous result, and which shapes are refused.

No worker and no Redis: a Celery app with the plugin, and signatures built
the way a user writes them (tests/e2e/test_chains.py runs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, chain, chord, group

from celery_persistent import InvalidMessage, InvalidOptions, Persistent
from celery_persistent.chaining import check_continuations, continuations, sent_by_tracer
from celery_persistent.planning import unpack

MSG1 = {"device": "counter", "id": "a", "count": 0}
MSG2 = {"path": "add", "by": 1}


@pytest.fixture
def plugin() -> Iterator[Persistent]:
    app = Celery("chaining", set_as_current=False)
    persistent = Persistent(app)

    @app.task(name="chaining.other", shared=False)
    def other(*args: Any) -> Any:
        return args

    yield persistent
    app.close()


def steps(plugin: Persistent, canvas: Any) -> list[Any]:
    """The ``chain`` option the chain's head is sent with (Celery's own preparation)."""
    tasks, _results = canvas.prepare_steps((), {}, canvas.tasks, None, None, None, plugin.app)
    return list(tasks[:-1])


def found(plugin: Persistent, chain_opt: Any = None, link: Any = None) -> list[tuple[Any, ...]]:
    return [tuple(s.args) for s in continuations(plugin.app, plugin.resolve.name, chain_opt, link)]


def test_continuations_are_the_mutable_resolve_steps_after_the_head(plugin: Persistent) -> None:
    resolve, other = plugin.resolve, plugin.app.tasks["chaining.other"]
    canvas = chain(resolve.s(MSG1, MSG2), resolve.s({"path": "add", "by": 2}), other.s(),
                   resolve.si(MSG1, MSG2), resolve.s({"path": "add", "by": 3}))
    assert sorted(found(plugin, steps(plugin, canvas)), key=repr) == sorted(
        [({"path": "add", "by": 2},), ({"path": "add", "by": 3},)], key=repr)


def test_links_groups_and_chord_headers_get_the_previous_result_too(plugin: Persistent) -> None:
    resolve = plugin.resolve
    link = [resolve.s({"path": "a"}), group(resolve.s({"path": "b"}), resolve.si(MSG1, MSG2)),
            chord([resolve.s({"path": "c"})], resolve.s({"path": "d"}))]
    assert sorted(found(plugin, link=link), key=repr) == sorted(
        [({"path": "a"},), ({"path": "b"},), ({"path": "c"},)], key=repr)
    assert found(plugin, link=resolve.s({"path": "e"})) == [({"path": "e"},)]
    assert found(plugin) == []


@pytest.mark.parametrize("sig", [
    lambda r: r.s(MSG2),
    lambda r: r.s(MSG2, {"spawn_worker": True}),
    lambda r: r.s(msg2=MSG2),
    lambda r: r.si(MSG1, MSG2),  # immutable: gets nothing prepended
])
def test_chained_shapes_that_work(plugin: Persistent, sig: Any) -> None:
    check_continuations(plugin.app, plugin.resolve.name, None, sig(plugin.resolve))


@pytest.mark.parametrize("sig", [
    lambda r: r.s(MSG1, MSG2),
    lambda r: r.s(MSG1, MSG2, {"spawn_worker": True}),
])
def test_a_full_request_as_a_chained_step_is_refused_with_the_fix(plugin: Persistent, sig: Any) -> None:
    head_chain = steps(plugin, chain(plugin.resolve.s(MSG1, MSG2), sig(plugin.resolve)))
    with pytest.raises(InvalidOptions) as refused:
        check_continuations(plugin.app, plugin.resolve.name, head_chain, None)
    assert refused.value.option == "opts"
    text = str(refused.value)
    assert "previous result" in text and "resolve.s(msg2)" in text and "resolve.si(msg1, msg2)" in text


def test_other_bad_chained_steps_are_refused_too(plugin: Persistent) -> None:
    resolve = plugin.resolve
    with pytest.raises(InvalidMessage, match="msg2"):
        check_continuations(plugin.app, resolve.name, None, resolve.s("not a message"))
    with pytest.raises(InvalidOptions, match="unknown option"):
        check_continuations(plugin.app, resolve.name, None, resolve.s(MSG2, {"spawn_workers": True}))
    with pytest.raises(InvalidOptions, match="repeated"):
        check_continuations(plugin.app, resolve.name, None, resolve.s(msg1=MSG1, msg2=MSG2))


def test_unpack_names_the_chain_mistake() -> None:
    """What a worker sees when such a step reached it anyway (after a task that is not resolve)."""
    with pytest.raises(InvalidOptions, match="previous result"):
        unpack([{"count": 1}, MSG1, MSG2], {})
    with pytest.raises(InvalidOptions, match="not 4 arguments"):
        unpack([{"count": 1}, MSG1, MSG2, {}], {})
    assert unpack([MSG1, MSG2, {"spawn_worker": True}], {}) == (MSG1, MSG2, {"spawn_worker": True})


def test_outside_a_worker_nothing_is_sent_by_the_tracer(plugin: Persistent) -> None:
    assert not sent_by_tracer(plugin.app, {"parent_id": "some-task-id"})
    assert not sent_by_tracer(plugin.app, {})
