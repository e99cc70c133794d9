"""Packaging: the built wheel and sdist, docker/compose.yaml and the configuration modules.

The docs site build and the install of the wheel into a fresh virtualenv
are end-to-end tests (tests/e2e).  Nothing here needs Docker: the compose
file is parsed, and every command in it is checked to resolve to something
installed (the ``celery`` console script, its sub-commands and the worker
options the plugin adds, or an importable module for ``python -m``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shlex
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
import yaml
from celery import Celery
from celery.app.defaults import DEFAULTS

import celery_persistent
from celery_persistent import config as persistent_config
from celery_persistent.bootstep import WORKER_OPTIONS
from celery_persistent.config import OPTION_DEFAULTS, Settings, resolve_options
from tests.support import ROOT
from tests.wheel import build

COMPOSE = ROOT / "docker" / "compose.yaml"
COMPOSE_RABBITMQ = ROOT / "docker" / "compose.rabbitmq.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
CONSTRAINTS = ROOT / "docker" / "constraints.txt"
DOCKERIGNORE = ROOT / ".dockerignore"
PACKAGE = ROOT / "celery_persistent"
CONFIGS = sorted(p.stem for p in (PACKAGE / "configs").glob("*.py") if p.stem != "__init__")
# The shipped modules, and their older names at the repository root (docker/ uses them).
CONFIG_MODULES = [f"celery_persistent.configs.{name}" for name in CONFIGS] + [f"configs.{name}" for name in CONFIGS]
APP_SERVICES = {"worker", "persistent-worker", "flower", "metrics", "demo"}
EXPECTED_SERVICES = {"redis"} | APP_SERVICES  # RabbitMQ comes with docker/compose.rabbitmq.yaml
ON_BROKER = {"worker", "persistent-worker", "flower", "metrics"}  # the demo keeps its own redis:// broker

# -- compose.yaml --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def argv(command: str | list[Any]) -> list[str]:
    """A compose ``command`` as argv, with ``${VAR:-default}`` replaced by its default."""
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    return [re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", w) for w in words]


def split_celery(words: list[str]) -> tuple[str, list[str]]:
    """(sub-command, its arguments) of ``celery [global options] SUB [args]``."""
    assert words[0] == "celery"
    rest = words[1:]
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"):
            rest.pop(0)  # takes a value
    assert rest, f"no celery sub-command in {words}"
    return rest[0], rest[1:]


def option_names(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def test_compose_parses_and_has_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= EXPECTED_SERVICES
    for name in APP_SERVICES:
        assert services[name].get("command"), f"service {name} has no command"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert (COMPOSE.parent / services[name]["build"]["context"] / "docker" / "Dockerfile").is_file()
    assert services["persistent-worker"]["deploy"]["replicas"] >= 1
    assert services["demo"]["restart"] == "no"


def test_compose_services_run_the_expected_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert split_celery(argv(services["worker"]["command"]))[0] == "worker"
    sub, args = split_celery(argv(services["persistent-worker"]["command"]))
    assert sub == "worker"
    assert "--persistent" in args
    assert args[args.index("-P") + 1] == "solo"
    assert split_celery(argv(services["flower"]["command"]))[0] == "flower"
    assert argv(services["demo"]["command"]) == ["python", "-m", "celery_persistent.demo"]
    sub, args = split_celery(argv(services["metrics"]["command"]))
    assert (sub, args[0]) == ("persistent", "metrics")
    assert args[args.index("--port") + 1] == "9808" and args[args.index("--address") + 1] == "0.0.0.0"
    assert any(str(port).endswith(":9808:9808") for port in services["metrics"]["ports"])


def test_celery_console_script_is_installed() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts", name="celery")
    assert [ep.value for ep in scripts] == ["celery.__main__:main"]
    script = Path(sys.executable).parent / "celery"
    assert script.is_file() and os.access(script, os.X_OK), f"{script} is not an executable"


def test_persistent_subcommand_is_a_celery_commands_entry_point() -> None:
    found = importlib.metadata.entry_points(group="celery.commands", name="persistent")
    assert [ep.value for ep in found] == ["celery_persistent.cli:persistent"]
    command = next(iter(found)).load()
    assert isinstance(command, click.Command)


def test_plugin_worker_options_are_the_documented_ones() -> None:
    names = {opt for option in WORKER_OPTIONS for opt in option.opts}
    assert {"--persistent", "--persistent-cache-bytes", "--persistent-timeout"} <= names


def test_every_compose_command_resolves(compose: dict[str, Any]) -> None:
    from celery.bin.celery import celery as celery_main

    plugin_options = {opt for option in WORKER_OPTIONS for opt in option.opts}
    for name, service in compose["services"].items():
        if "command" not in service or name not in APP_SERVICES:
            continue
        words = argv(service["command"])
        if words[0] == "python":
            assert words[1] == "-m", f"{name}: {words}"
            # The module may be written by someone else concurrently: it must exist when this runs.
            assert importlib.util.find_spec(words[2]) is not None, f"{name}: no module {words[2]}"
            continue
        sub, args = split_celery(words)
        assert sub in celery_main.commands, f"{name}: `celery {sub}` is not a registered sub-command"
        command = celery_main.commands[sub]
        assert isinstance(command, click.Command)
        if sub == "worker":
            known = option_names(command) | plugin_options
            for word in args:
                if word.startswith("-"):
                    assert word.split("=", 1)[0] in known, f"{name}: unknown worker option {word}"
            used = {w for w in args if w.startswith("--persistent")}
            assert used <= plugin_options, f"{name}: {used - plugin_options} not added by celery_persistent"
        if sub == "persistent":
            assert args and args[0] in command.commands, f"{name}: no `celery persistent {args[:1]}`"
            known = option_names(command.commands[args[0]])
            unknown = {w for w in args[1:] if w.startswith("-") and w.split("=", 1)[0] not in known}
            assert not unknown, f"{name}: `celery persistent {args[0]}` has no {unknown}"


def test_dockerfile_basics() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.12\.\d+-slim\b", text, re.M)
    assert re.search(r"^ARG PROJ\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^RUN pip install .*\.", text, re.M)
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"



@pytest.fixture(scope="module")
def compose_rabbitmq() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_RABBITMQ.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


PINNED_IMAGE = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+(-[\w.]+)?$")
"""An image tag with a full version (x.y.z, then a variant): never `latest`, never a floating `7-alpine`."""


def shell_words(test: list[str]) -> list[str]:
    """A healthcheck's command as argv (CMD-SHELL: the shell line, output redirections dropped)."""
    kind, *rest = test
    words = shlex.split(rest[0]) if kind == "CMD-SHELL" else list(rest)
    if ">" in words:
        words = words[: words.index(">")]
    return words


def test_every_image_is_pinned_to_a_full_version(compose: dict[str, Any],
                                                 compose_rabbitmq: dict[str, Any]) -> None:
    images = [service["image"] for data in (compose, compose_rabbitmq)
              for service in data["services"].values() if "image" in service]
    assert len(images) >= 3
    for image in images:
        assert PINNED_IMAGE.match(image), f"{image} is not pinned to x.y.z"
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert bases and all(PINNED_IMAGE.match(base) for base in bases), bases


def test_the_image_pins_pip_and_every_python_package() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r'pip install "pip==\d+\.\d+(\.\d+)?"', text), "pip itself is not pinned"
    assert "PIP_CONSTRAINT=/tmp/constraints.txt pip install" in text
    assert "COPY docker/constraints.txt /tmp/constraints.txt" in text
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[\w.]+", version), f"{line}: not an exact pin"
            pins[canonical(name)] = version
    assert re.search(r'"flower==' + re.escape(pins["flower"]) + '"', text), "flower is not pinned as constrained"
    # Everything the image installs is pinned: the closure of the project's runtime requirements
    # (with the extras it installs) and Flower's, read from the installed distributions.
    needed = closure(["celery-persistent[fast,msgpack,metrics]", "flower"])
    assert needed - set(pins) == set(), f"not pinned in {CONSTRAINTS.name}: {needed - set(pins)}"
    assert {"hatchling", "pluggy", "pathspec", "trove-classifiers"} <= set(pins), "the build backend floats"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> set[str]:
    """Names of the distributions ``roots`` need, transitively, as installed here (markers evaluated)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [Requirement(root) for root in roots]
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen and not req.extras:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(req.name) or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for extra in req.extras or {""}):
                todo.append(dep)
    return seen - {"celery-persistent"}


def test_app_services_wait_only_for_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "rabbitmq" not in services, "a Redis-only deployment must not need RabbitMQ"
    for name in APP_SERVICES:
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        assert argv([services[name]["environment"]["CELERY_BROKER_URL"]])[0].startswith("redis://redis:")


def test_the_rabbitmq_override_adds_its_broker_and_waits_for_it(compose: dict[str, Any],
                                                                 compose_rabbitmq: dict[str, Any]) -> None:
    services = compose_rabbitmq["services"]
    assert services["rabbitmq"]["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert set(services) == {"rabbitmq"} | ON_BROKER
    for name in ON_BROKER:
        assert services[name]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}, name
        env = {key: argv([value])[0] for key, value in services[name]["environment"].items()}
        assert env["CELERY_BROKER_URL"].startswith("amqp://")
        assert importlib.util.find_spec(env["CELERY_CONFIG_MODULE"]) is not None
    default = argv([compose["x-app"]["environment"]["CELERY_CONFIG_MODULE"]])[0]
    assert importlib.util.find_spec(default) is not None, default


def test_workers_have_a_ping_healthcheck_that_resolves(compose: dict[str, Any]) -> None:
    from celery.bin.celery import celery as celery_main

    inspect = celery_main.commands["inspect"]
    for name in ("worker", "persistent-worker"):
        check = compose["services"][name]["healthcheck"]
        words = shell_words(check["test"])
        sub, args = split_celery([w.replace("$$PROJ", "proj") for w in words])
        assert (sub, args[0]) == ("inspect", "ping"), words
        assert args[args.index("-d") + 1] == "celery@$$HOSTNAME", "ping this container's worker only"
        assert {w for w in args if w.startswith("-")} <= option_names(inspect)
        assert check["retries"] >= 3 and check["interval"] and check["timeout"]
    # One command for both (tests/e2e/test_docker_services.py runs it against a real worker).
    tests = {compose["services"][name]["healthcheck"]["test"][1] for name in ("worker", "persistent-worker")}
    assert len(tests) == 1


def test_flower_and_metrics_have_an_http_healthcheck(compose: dict[str, Any]) -> None:
    from flower.urls import handlers

    paths = {(handler.regex.pattern if hasattr(handler, "regex") else handler[0]).rstrip("$") for handler in handlers}
    flower = shell_words(compose["services"]["flower"]["healthcheck"]["test"])
    assert flower[:2] == ["python", "-c"] and "http://127.0.0.1:5555/healthcheck" in flower[2]
    assert "/healthcheck" in paths
    metrics = shell_words(compose["services"]["metrics"]["healthcheck"]["test"])
    assert "http://127.0.0.1:9808/metrics" in metrics[2]


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"], "the AOF must outlive the container"


def test_flower_requires_basic_auth_and_its_api_keeps_it(compose: dict[str, Any]) -> None:
    import flower.options
    from flower.command import ENV_VAR_PREFIX

    env = compose["services"]["flower"]["environment"]
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?"), "no Flower without credentials"
    assert str(env.get("FLOWER_UNAUTHENTICATED_API", "false")).lower() == "false"
    assert ENV_VAR_PREFIX == "FLOWER_" and "basic_auth" in flower.options.options  # read from FLOWER_BASIC_AUTH
    for name in APP_SERVICES - {"flower"}:
        assert "FLOWER_UNAUTHENTICATED_API" not in compose["services"][name]["environment"]


def test_published_ports_listen_on_localhost(compose: dict[str, Any], compose_rabbitmq: dict[str, Any]) -> None:
    for data in (compose, compose_rabbitmq):
        for name, service in data["services"].items():
            for port in service.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "everything is left out unless named"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {path.rstrip("/") for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$",
                                                         DOCKERFILE.read_text(encoding="utf-8"), re.M)
              for path in source.split()}
    assert copied <= included, f"the Dockerfile copies {copied - included}, which .dockerignore leaves out"
    assert not included & {".git", ".venv", "tests", "docs", "bench", "chaos", ".ci"}
    assert "**/__pycache__" in lines


# -- the configuration modules -------------------------------------------------------------


def persistent_keys_read_by_config() -> set[str]:
    """Every ``persistent_*`` key that celery_persistent/config.py reads."""
    source = Path(persistent_config.__file__).read_text(encoding="utf-8")
    literal = set(re.findall(r"[\"'](persistent_[a-z_]+)[\"']", source))
    return literal | {f"persistent_{name}" for name in OPTION_DEFAULTS}


def settings_of(module: ModuleType) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and not callable(value)
        and name != "annotations"
    }


def test_there_are_the_three_configs() -> None:
    assert {"redis", "rabbitmq", "production"} <= set(CONFIGS)
    importlib.import_module("celery_persistent.configs")
    importlib.import_module("configs")


@pytest.mark.parametrize("name", CONFIGS)
def test_root_configs_are_the_shipped_ones(name: str) -> None:
    """``configs.<name>`` (repository root, docker/) sets exactly what ``celery_persistent.configs.<name>`` sets."""
    shipped = settings_of(importlib.import_module(f"celery_persistent.configs.{name}"))
    assert settings_of(importlib.import_module(f"configs.{name}")) == shipped


@pytest.mark.parametrize("module_name", CONFIG_MODULES)
def test_config_keys_are_real_settings(module_name: str) -> None:
    module = importlib.import_module(module_name)
    persistent_keys = persistent_keys_read_by_config()
    keys = settings_of(module)
    assert keys, f"{module_name} sets nothing"
    for key in keys:
        assert key.islower(), f"{module_name}.{key}: use Celery's lowercase setting names"
        if key.startswith("persistent_"):
            assert key in persistent_keys, f"{module_name}.{key} is not read by celery_persistent.config"
        else:
            assert key in DEFAULTS, f"{module_name}.{key} is not a Celery setting"


@pytest.mark.parametrize("module_name", CONFIG_MODULES)
def test_config_applies_to_a_fresh_app(module_name: str) -> None:
    app = Celery(f"packaging-{module_name}", set_as_current=False)
    app.config_from_object(module_name)
    settings = Settings.from_conf(app.conf)
    assert settings.redis_url.startswith(("redis://", "rediss://", "unix://"))
    resolve_options(None, app.conf)
    for key in ("accept_content", "result_accept_content"):
        assert "pickle" not in (app.conf[key] or ()), f"{module_name}: {key} allows pickle"
    assert app.conf.task_serializer in ("json", "msgpack")
    assert app.conf.result_serializer in ("json", "msgpack")


def test_production_config_is_json_only_with_bounded_recovery() -> None:
    app = Celery("packaging-production", set_as_current=False)
    app.config_from_object("celery_persistent.configs.production")
    conf = app.conf
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert conf.task_serializer == conf.result_serializer == "json"
    assert conf.worker_prefetch_multiplier == 1
    assert conf.result_expires
    settings = Settings.from_conf(conf)
    assert settings.lease_ttl < 60


# -- the built wheel and sdist --------------------------------------------------------------

DOC_REFERENCE = re.compile(r"``((?:docs/[\w./-]+|README)\.md)``")


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("wheel", tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def wheel_names(wheel_file: Path) -> set[str]:
    with zipfile.ZipFile(wheel_file) as wheel:
        return set(wheel.namelist())


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    with tarfile.open(build("sdist", tmp_path_factory.mktemp("sdist"))) as sdist:
        # Names inside the sdist, without its top directory ("celery_persistent-0.1.0/").
        return {name.partition("/")[2] for name in sdist.getnames()}


def test_wheel_ships_the_license(wheel_names: set[str]) -> None:
    licenses = {n for n in wheel_names if re.fullmatch(r"celery_persistent-[^/]+\.dist-info/licenses/LICENSE", n)}
    assert licenses, f"no LICENSE in the wheel's dist-info: {sorted(n for n in wheel_names if 'dist-info' in n)}"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_wheel_metadata_names_the_license_and_the_redis_transport(wheel_file: Path) -> None:
    with zipfile.ZipFile(wheel_file) as wheel:
        metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(metadata_name).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    # kombu's Redis transport imports `packaging`, which only its `redis` extra brings.
    assert re.search(r"^Requires-Dist: kombu\[redis\]", metadata, re.M), metadata


def test_wheel_ships_the_configs(wheel_names: set[str]) -> None:
    assert "celery_persistent/configs/__init__.py" in wheel_names
    for name in CONFIGS:
        assert f"celery_persistent/configs/{name}.py" in wheel_names


def test_wheel_ships_every_lua_script(wheel_names: set[str]) -> None:
    scripts = sorted(p.name for p in (PACKAGE / "lua").glob("*.lua"))
    assert scripts, "no Lua scripts in celery_persistent/lua"
    missing = [s for s in scripts if f"celery_persistent/lua/{s}" not in wheel_names]
    assert not missing, f"Lua scripts missing from the wheel: {missing}"


def test_wheel_ships_every_module_of_the_package(wheel_names: set[str]) -> None:
    modules = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    missing = [m for m in modules if m not in wheel_names]
    assert not missing, f"modules missing from the wheel: {missing}"


def test_package_docstring_points_at_docs_that_exist_and_ship(sdist_names: set[str]) -> None:
    """The docs named in ``celery_persistent.__doc__`` exist in the repository and ship in the sdist."""
    doc = celery_persistent.__doc__ or ""
    referenced = DOC_REFERENCE.findall(doc)
    assert "docs/index.md" in referenced and "README.md" in referenced, doc
    assert "DESIGN.md" not in doc
    for path in referenced:
        assert (ROOT / path).is_file(), f"the package docstring names {path}, which does not exist"
        assert path in sdist_names, f"the package docstring names {path}, which the sdist does not ship"


def test_the_seed_is_defined_in_the_docs() -> None:
    """The docs say "the seed" throughout: concepts.md defines it, and index.md points there."""
    concepts = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    assert re.search(r"^## The seed: `hb_persistent`$", concepts, re.M)
    assert "**The seed** is `hb_persistent`" in concepts
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "concepts.md#the-seed-hb_persistent" in index
