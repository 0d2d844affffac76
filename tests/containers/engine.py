"""The clinic as ops run it: the images from deploy/ built with Docker or podman, and deploy/docker-compose.yml
started with them, for the container tests.

    engine = container_engine()                  # docker where an engine answers, else podman
    build_images(engine)                         # deploy/images/build.sh: Debian-built infrastructure + services
    with compose_clinic(engine, tmp_path) as clinic:
        clinic.url("records")                    # a web app, on a published loopback port
        clinic.mail()                            # every message the mail sink stored
        clinic.stop("notifications-worker")      # SIGTERM, then SIGKILL after the grace period

No registry is needed: the infrastructure images (PostgreSQL, RabbitMQ, Redis, the mail sink) are built
from Debian packages by deploy/images/build.sh, and deploy/compose.debian-images.yml points compose at them.
The identity provider's image cannot be had that way, so the services run with CLINIC_ENV=test and trust
the development issuer, whose public keys (a JWKS file) are mounted into every service container.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from clinic.config import SERVICES, load_settings
from clinic.localservers import free_port
from clinic.testing import eventually

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = (DEPLOY / "docker-compose.yml", DEPLOY / "compose.debian-images.yml")
# Inside the containers: the development issuer's public keys, and the mail sink's Maildir.
JWKS_MOUNT = "/run/clinic-identity"
# Every container gets this long to stop on SIGTERM (compose's stop_grace_period is 30 s).
STOP_TIMEOUT = 30
HEALTH_TIMEOUT = 240
INFRASTRUCTURE = ("postgres", "rabbitmq", "redis", "mail-sink")


def _run(command: list[str], timeout: float = 120, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _answers(command: list[str]) -> bool:
    if not shutil.which(command[0]):
        return False
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass(frozen=True)
class Engine:
    """docker or podman, with the environment every call of it (and of compose) gets."""

    name: str
    env: dict = field(default_factory=dict)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return _run([self.name, *args], timeout=timeout, check=check, env=self.env)

    def compose(self, project: str, env_file: Path, *args: str, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess:
        files = [argument for path in COMPOSE_FILES for argument in ("-f", str(path))]
        if self.name == "docker":
            command = ["docker", "compose", "-p", project, *files, "--env-file", str(env_file), *args]
        else:
            # podman-compose from PyPI (Debian's is older), installed with the test tools.
            command = [str(Path(sys.executable).parent / "podman-compose"), "-p", project, *files,
                       "--env-file", str(env_file), *args]
        return _run(command, timeout=timeout, env=self.env, check=check)


def container_engine() -> Engine:
    """Docker where an engine answers, else podman; neither is a failure that says so, never a skip. The
    same choice as deploy/images/build.sh, which builds the images: podman's docker command counts as podman."""
    docker_is_podman = "podman" in subprocess.run(["docker", "--version"], capture_output=True, text=True).stdout.lower() \
        if shutil.which("docker") else False
    if not docker_is_podman and _answers(["docker", "info"]):
        return Engine("docker", dict(os.environ))
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(DEPLOY / "podman" / "containers.conf"))
    if shutil.which("podman"):
        info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=60, env=env)
        if info.returncode == 0:
            return Engine("podman", env)
        pytest.fail(f"podman is installed but does not run here: {info.stderr.strip()[-500:]}", pytrace=False)
    pytest.fail("neither a Docker engine nor podman answers on this machine: the container tests build and run the "
                "clinic's images and need one of them (`make test` installs podman on Debian as root)", pytrace=False)


def build_images(engine: Engine) -> None:
    """Every image the compose file runs, with what deploy/images/build.sh does for ops (cached layers kept)."""
    done = subprocess.run(["bash", str(DEPLOY / "images" / "build.sh")], capture_output=True, text=True,
                          timeout=1800, env=engine.env, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"deploy/images/build.sh exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def _development_identity(directory: Path) -> tuple[dict, Path]:
    """A token factory's settings and the directory holding only the public JWKS, for the containers."""
    private = directory / "identity-private"
    settings = load_settings("records", env={"CLINIC_ENV": "test", "CLINIC_VAR_DIR": str(private),
                                             "CLINIC_OIDC_JWKS_URL": (private / "identity" / "jwks.json").as_uri()})
    from clinic.auth import issue_token

    issue_token(settings, "container-test", ["admin"], ttl_minutes=1)  # makes the key pair
    public = directory / "identity-public"
    public.mkdir(mode=0o755)
    shutil.copyfile(private / "identity" / "jwks.json", public / "jwks.json")
    (public / "jwks.json").chmod(0o644)
    public.chmod(0o755)
    return settings, public


class ComposeClinic:
    """The clinic started from deploy/docker-compose.yml: the test's way in (published loopback ports and
    the mail sink's Maildir on the host) and its way to break it (stop and start a container)."""

    def __init__(self, engine: Engine, project: str, env_file: Path, ports: dict[str, int], maildir: Path, settings):
        self.engine, self.project, self.env_file = engine, project, env_file
        self.ports, self.maildir, self.token_settings = ports, maildir, settings

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def container(self, service: str) -> str:
        """The one container compose runs for `service` (found by compose's own labels)."""
        names = self.engine("ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
                            "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").stdout.split()
        assert len(names) == 1, f"containers for {service}: {names}"
        return names[0]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return self.engine.compose(self.project, self.env_file, *args, timeout=timeout, check=check)

    def healthy(self, service: str) -> bool:
        name = self.container(service)
        if self.engine.name == "podman":
            # podman 4.3 runs health checks from systemd timers; with no systemd, the test runs them.
            return self.engine("healthcheck", "run", name, check=False).returncode == 0
        status = self.engine("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
        return status == "healthy"

    def wait_healthy(self, services, timeout: float = HEALTH_TIMEOUT) -> None:
        for service in services:
            eventually(lambda service=service: self.healthy(service), timeout=timeout, interval=1,
                       message=f"{service}'s health check to pass")

    def exit_code(self, service: str) -> int | None:
        state = json.loads(self.engine("inspect", "--format", "{{json .State}}", self.container(service)).stdout)
        return None if state.get("Running") or state.get("Status") in ("running", "created", "configured") else state["ExitCode"]

    def wait_completed(self, service: str, timeout: float = HEALTH_TIMEOUT) -> None:
        def finished():
            code = self.exit_code(service)
            return None if code is None else [code]  # a list, so that exit status 0 counts as finished
        [code] = eventually(finished, timeout=timeout, interval=1, message=f"{service} to finish")
        assert code == 0, f"{service} exited {code}\n{self.logs(service)}"

    def logs(self, service: str, lines: int = 40) -> str:
        try:
            done = self.engine("logs", "--tail", str(lines), self.container(service), check=False, timeout=30)
        except AssertionError as error:
            return str(error)
        return f"--- {service} ---\n{done.stdout}{done.stderr}"

    def print_logs(self) -> None:
        """The tail of every container's log, for a failed run (pytest shows what a test printed)."""
        for service in (*INFRASTRUCTURE, *(f"{s}-{r}" for s in SERVICES for r in ("migrate", "web", "worker"))):
            print(self.logs(service))

    def stop(self, service: str) -> subprocess.CompletedProcess:
        return self.engine("stop", "-t", str(STOP_TIMEOUT), self.container(service), timeout=STOP_TIMEOUT + 30)

    def start(self, service: str) -> None:
        self.engine("start", self.container(service))

    def mail(self) -> list[email.message.EmailMessage]:
        """Every message the mail sink stored (its Maildir, bind-mounted from the host)."""
        found = []
        for folder in ("new", "cur"):
            for path in sorted((self.maildir / folder).glob("*")) if (self.maildir / folder).is_dir() else ():
                found.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
        return found


def _env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    path.chmod(0o600)
    return path


@contextmanager
def compose_clinic(engine: Engine, directory: Path, service_env: dict[str, str], timings: dict[str, float]) -> Iterator[ComposeClinic]:
    """Start the whole clinic with compose, as the README's Docker route does, wait for every health check,
    yield it, and take it down (with its volumes) whatever happened."""
    project = f"clinic-test-{secrets.token_hex(3)}"
    settings, public_keys = _development_identity(directory)
    maildir = directory / "mail"
    maildir.mkdir()
    maildir.chmod(0o777)  # the sink runs as its own non-root user
    ports = {service: free_port() for service in SERVICES}
    values = compose_environment(public_keys, maildir, ports, service_env)
    env_file = _env_file(directory / "clinic.env", values)
    clinic = ComposeClinic(engine, project, env_file, ports, maildir, settings)
    began = time.monotonic()
    try:
        # In the order compose's conditions give it, each step with --no-deps: podman-compose on podman 4.3
        # waits for no health check, and without --no-deps it makes a container require the one-shot
        # containers it depends on, which podman then never restarts after a crash (they stay exited).
        clinic.compose("up", "-d", "--no-build", "rabbitmq-accounts")
        clinic.wait_completed("rabbitmq-accounts")
        clinic.compose("up", "-d", "--no-build", "--no-deps", *INFRASTRUCTURE)
        clinic.wait_healthy(INFRASTRUCTURE)
        migrations = [f"{service}-migrate" for service in SERVICES]
        clinic.compose("up", "-d", "--no-build", "--no-deps", *migrations)
        for migration in migrations:
            clinic.wait_completed(migration)
        timings["infrastructure up and migrated"] = time.monotonic() - began
        apps = [f"{service}-{role}" for service in SERVICES for role in ("web", "worker")]
        clinic.compose("up", "-d", "--no-build", "--no-deps", *apps)
        clinic.wait_healthy(apps)
        for service in SERVICES:
            eventually(lambda service=service: requests.get(clinic.url(service) + "/readyz", timeout=5).status_code == 200,
                       timeout=HEALTH_TIMEOUT, interval=1, message=f"{service} /readyz to answer 200")
        timings["clinic started (compose up to every service ready)"] = time.monotonic() - began
        yield clinic
    except BaseException:
        clinic.print_logs()
        raise
    finally:
        # Unchecked: a failed take-down must not hide why the run failed (the next run has its own project).
        clinic.compose("down", "-v", "-t", "10", timeout=300, check=False)


def compose_environment(public_keys: Path, maildir: Path, ports: dict[str, int], service_env: dict[str, str]) -> dict[str, str]:
    """The env file for one test run: fresh passwords (never the example file's), the development issuer,
    loopback ports chosen for this run."""
    def password() -> str:
        return secrets.token_urlsafe(18)
    values = {
        "CLINIC_ENV": "test",
        "CLINIC_OIDC_ISSUER": "http://127.0.0.1/clinic-development",
        "CLINIC_OIDC_JWKS_URL": f"file://{JWKS_MOUNT}/jwks.json",
        "CLINIC_IDENTITY_DIR": str(public_keys),
        "CLINIC_MAIL_SINK_DIR": str(maildir),
        "CLINIC_PUBLISH_ADDRESS": "127.0.0.1",
        "CLINIC_ADDRESS": "1 Test Street, Springfield",
        "CLINIC_PHONE": "+1 555 0100",
        "POSTGRES_PASSWORD": password(),
        "KEYCLOAK_DATABASE_PASSWORD": password(),
        "KEYCLOAK_ADMIN_PASSWORD": password(),
        "KEYCLOAK_HOSTNAME": "id.clinic.test",
    }
    for service in SERVICES:
        upper = service.upper()
        values[f"{upper}_DATABASE_OWNER_PASSWORD"] = password()
        values[f"{upper}_DATABASE_PASSWORD"] = password()
        values[f"RABBITMQ_{upper}_PASSWORD"] = password()
        values[f"CLINIC_{upper}_PORT"] = str(ports[service])
    values["RABBITMQ_OPERATOR_PASSWORD"] = password()
    values.update(service_env)
    return values
