#!/usr/bin/env bash
# Installs what `make run` (bootstrap.sh run) or `make test` (bootstrap.sh test) needs, non-interactively:
# (bootstrap.sh containers: what the container tests build with)
# Debian packages where missing (as root), then the virtualenv with every package at its locked version.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-run}

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ "$purpose" = test ] || [ "$purpose" = bench ]; then
  # PostgreSQL 15 with btree_gist (shipped in postgresql-15 on Debian 12).
  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15 postgresql-contrib)
  # The TLS mail tests make their own certificate authority with it.
  command -v openssl >/dev/null || missing+=(openssl)
fi
if [ "$purpose" = containers ] && ! docker info >/dev/null 2>&1; then
  # No Docker engine: podman runs the containers (runc, since crun fails on hybrid cgroups), and
  # debootstrap makes the Debian root file system the infrastructure images are built from.
  # netavark (with aardvark-dns for container names) sets up the networks through iptables.
  for tool in podman runc debootstrap netavark aardvark-dns iptables; do
    command -v "$tool" >/dev/null || [ -x "/usr/lib/podman/$tool" ] || missing+=("$tool")
  done
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    # The packages' own services are not wanted: the clinic starts its servers in its own directories.
    for unit in rabbitmq-server postgresql; do service "$unit" stop >/dev/null 2>&1 || true; done
  else
    echo "missing Debian packages: ${missing[*]} — install them (as root: apt-get install ${missing[*]})," >&2
    echo "or point RABBITMQ_URL / CLINIC_TEST_RABBITMQ_URL / CLINIC_TEST_POSTGRES_URL at running servers." >&2
  fi
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ -n "$(find constraints.txt requirements-dev.txt shared/pyproject.toml services/*/pyproject.toml -newer "$stamp" 2>/dev/null)" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  echo "installing Python packages into .venv (log: .venv/install.log)"
  if ! .venv/bin/python -m pip install --disable-pip-version-check -c constraints.txt -r requirements-dev.txt > .venv/install.log 2>&1; then
    tail -n 30 .venv/install.log >&2
    exit 1
  fi
  touch "$stamp"
fi
