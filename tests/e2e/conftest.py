"""The e2e tier: the real docker compose stack, built from this checkout.

One stack per test session, under a project name of its own and on free loopback ports, torn down
with its volumes at the end. Without a Docker engine the tier is skipped, except under CI, where
a skipped tier would pass for a tested one: there it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from testcontainers.compose import DockerCompose

from tests.e2e.stack import PUBLISHED, REPO_ROOT, Stack, docker_unavailable_reason, free_ports


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    reason = docker_unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"e2e tier cannot run under CI: {reason} (.ci/run starts the engine with ../shared/docker/engine-up.sh)")
        pytest.skip(f"e2e tier needs Docker: {reason}")

    ports = dict(zip(PUBLISHED, free_ports(len(PUBLISHED)), strict=True))
    with pytest.MonkeyPatch.context() as env:
        # Every compose command (ours and testcontainers') inherits these: one project, one set of ports.
        # PYTHON_IMAGE and MAILHOG_IMAGE pass through as they are (stand-ins where no registry is reachable).
        env.setenv("COMPOSE_PROJECT_NAME", f"eventgrid-e2e-{uuid.uuid4().hex[:8]}")
        for service, (variable, _container_port) in PUBLISHED.items():
            env.setenv(variable, str(ports[service]))
        compose = DockerCompose(context=REPO_ROOT, compose_file_name="docker-compose.yml", build=True, wait=True)
        try:
            compose.start()
            yield Stack(compose=compose, ports=ports)
        finally:
            compose.stop(down=True)  # down --volumes: nothing of the run is left behind


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed e2e test's report carries the stack's recent logs: the containers are gone after."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.failed and call.when == "call" and isinstance(stack, Stack):
        report.sections.append(("docker compose logs (last 60 lines per service)", stack.logs(tail=60)))
    return report
