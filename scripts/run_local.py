"""`make run`: the whole clinic on one machine, on its embedded defaults.

Starts a local RabbitMQ (unless RABBITMQ_URL is set), a local SMTP mail sink on
127.0.0.1:8025 that keeps every message under var/mail/ (Maildir), and for each
service its migrations, its web app and its worker, on SQLite files under var/.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clinic import bus
from clinic.config import load_settings
from clinic.db import create_engine
from clinic.localservers import LocalRabbitMQ, ServerNotAvailable, wait_for_port
from clinic.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("CLINIC_VAR_DIR", ROOT / "var")).resolve()
BIN = Path(sys.executable).parent
PORTS = {"scheduling": 8101, "sessions": 8102, "records": 8103, "notifications": 8104}
MAIL_PORT = int(os.environ.get("SMTP_PORT", "8025"))


def main() -> int:
    VAR.mkdir(parents=True, exist_ok=True)
    # A Maildir: the sink writes each message to tmp/ and moves it to new/, which must both exist.
    for folder in ("tmp", "new", "cur"):
        (VAR / "mail" / folder).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CLINIC_VAR_DIR=str(VAR), SMTP_HOST="127.0.0.1", SMTP_PORT=str(MAIL_PORT))
    # The demo's on-call staff, so that vital-sign alerts are mailed (to the sink) unless told otherwise.
    env.setdefault("ONCALL_EMAILS", "on-call@clinic.localhost")
    rabbit = None
    children: list[subprocess.Popen] = []
    try:
        if not os.environ.get("RABBITMQ_URL"):
            rabbit = LocalRabbitMQ(VAR / "rabbitmq", port=_rabbit_port())
            print(f"starting RabbitMQ on 127.0.0.1:{rabbit.port} (files in {rabbit.base})", flush=True)
            env["RABBITMQ_URL"] = rabbit.start()
        children.append(_spawn("mail", [str(BIN / "python"), "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{MAIL_PORT}",
                                        "-c", "aiosmtpd.handlers.Mailbox", str(VAR / "mail")], env))
        for service in PORTS:
            settings = load_settings(service, env)
            migrate(create_engine(settings.database_url), importlib.import_module(f"{service}.db").MIGRATIONS)
            # Every consumer's queue before any relay runs: a migration may announce what exists already
            # (scheduling's rooms), and an event published before its consumer's queue would be unrouted.
            consumed = importlib.import_module(f"{service}.worker").handlers(settings)
            if consumed:
                bus.declare_consumer(settings, consumed)
        for service, port in PORTS.items():
            children.append(_spawn(f"{service}-web", [str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf",
                                                      "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
                                                      "--log-level", "warning", f"{service}.app:create_app()"], env))
            children.append(_spawn(f"{service}-worker", [str(BIN / f"{service}-worker")], env))
        for port in [MAIL_PORT, *PORTS.values()]:
            wait_for_port(port, 30, what=f"port {port}")
        _banner(env)
        _wait_until_interrupted(children)
    except ServerNotAvailable as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except bus.BROKER_ERRORS as exc:
        print(f"make run: RabbitMQ at RABBITMQ_URL is not reachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        print("\nstopping…", flush=True)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if rabbit is not None:
            rabbit.stop()
        print("stopped", flush=True)
    return 0


def _rabbit_port() -> int | None:
    """5672 when it is free, so `clinic` commands find the broker on its usual port."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 5672))
            return 5672
        except OSError:
            return None


def _spawn(name: str, command: list[str], env: dict) -> subprocess.Popen:
    log = open(VAR / f"{name}.log", "ab")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)


def _banner(env: dict) -> None:
    print("\nThe clinic is running:")
    for service, port in PORTS.items():
        print(f"  {service:<14} http://127.0.0.1:{port}   (docs: /docs, OpenAPI: /openapi.json)")
    print(f"  mail sink      smtp://127.0.0.1:{MAIL_PORT} → {VAR / 'mail'}")
    print(f"  RabbitMQ       {env['RABBITMQ_URL'].split('@')[-1]}")
    print(f"  logs           {VAR}/*.log")
    print("\nA staff token for the API: .venv/bin/clinic token --role front_desk")
    print("Ctrl-C stops everything.", flush=True)


def _wait_until_interrupted(children: list[subprocess.Popen]) -> None:
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop["now"]:
        for child in children:
            if child.poll() is not None:
                print(f"a process exited (code {child.returncode}): see {VAR}/*.log", file=sys.stderr)
                return
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
