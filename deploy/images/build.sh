#!/usr/bin/env bash
# Builds every image the clinic's containers need from Debian packages only, for machines where no
# image registry answers (deploy/README.md, "Images without a registry"):
#
#   localhost/clinic-debian:<codename>   a debootstrap of this machine's Debian release, imported
#   localhost/clinic-python:3.11         Debian's python3 (the base of the service images)
#   localhost/clinic-postgres:15         PostgreSQL 15, used like the official postgres image
#   localhost/clinic-rabbitmq:3          RabbitMQ with the management plugin
#   localhost/clinic-redis:7             Redis
#   localhost/clinic-mail-sink:latest    aiosmtpd keeping each message as a file (Maildir)
#   localhost/clinic-<service>:latest    the four services, from deploy/Dockerfile
#
# Usage, as root, from anywhere:  deploy/images/build.sh [--base-only | --services-only] [--refresh]
#
# Docker when an engine answers, else podman (CONTAINERS_CONF defaults to deploy/podman/containers.conf).
# Cached: the Debian tarball is kept in ${CLINIC_IMAGE_CACHE:-var/images} and the Debian image is not
# made again while it exists; the other builds reuse the engine's layer cache. --refresh makes everything
# again from the mirror, without the cache: how the images get the release's latest security fixes.
# apt and pip inside the builds use the host's network, CA certificates and pip configuration (mounted
# read-only, or as a throw-away overlay), so they reach the package registries the way this machine does.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CLINIC_IMAGE_CACHE:-$repo/var/images}
services=(scheduling sessions records notifications)

fail() { echo "build.sh: $*" >&2; exit 1; }

build_base=1
build_services=1
refresh=0
for arg in "$@"; do
    case "$arg" in
        --base-only) build_services=0 ;;
        --refresh) refresh=1 ;;
        --services-only) build_base=0 ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option '$arg' (use --base-only, --services-only or --refresh)" ;;
    esac
done
[ "$build_base$build_services" != 00 ] || fail "--base-only and --services-only exclude each other"

# Each step prints its name when it starts and how long it took.
started_all=$SECONDS
step() {
    local name=$1 started=$SECONDS
    shift
    printf '==> %s\n' "$name"
    "$@"
    printf '    %s: %ss\n' "$name" "$((SECONDS - started))"
}

# --- the engine ----------------------------------------------------------------------------------

engine=
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        && ! docker --version 2>/dev/null | grep -qi podman; then
    engine=docker
elif command -v podman >/dev/null 2>&1; then
    engine=podman
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/deploy/podman/containers.conf}
    podman info >/dev/null 2>&1 \
        || fail "podman is installed but does not work here (podman info failed; CONTAINERS_CONF=$CONTAINERS_CONF)"
else
    fail "no container engine: docker does not answer ('docker info' failed or docker is not installed) and podman is not installed (apt-get install podman runc)"
fi
echo "engine: $engine"

image_exists() {
    if [ "$engine" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
    else podman image exists "$1"; fi
}

# Read-only mounts for the builds: the host's CA bundle, its pip configuration and the local
# directories or files that configuration names (find-links, constraints, a file:// index).
build_flags=()
if [ "$engine" = podman ]; then
    # docker format keeps HEALTHCHECK; chroot isolation and the host network are what work here.
    build_flags+=(--format docker --network=host --isolation=chroot --pull=never)
    mount_ro() {
        local dir
        [ -e "$1" ] || return 0
        for dir in $mounted; do
            case "$1/" in "$dir"/*) return 0 ;; esac   # already mounted, or inside a mounted directory
        done
        build_flags+=(-v "$1:$1:ro")
        mounted="$mounted$1 "
    }
    # /etc/ssl/certs is added by build() below (its own mode); anything a pip file names in it is covered.
    mounted=" /etc/ssl/certs "
    pip_files=()
    [ -f /etc/pip.conf ] && pip_files+=(/etc/pip.conf)
    if [ -d /etc/xdg/pip ]; then
        pip_files+=(/etc/xdg/pip/*.conf)
        mount_ro /etc/xdg/pip
    fi
    for f in "${pip_files[@]}"; do
        [ -f "$f" ] || continue
        mount_ro "$f"
        # Values of find-links, constraint, index-url, ... that are local paths.
        while read -r value; do
            for path in $value; do
                path=${path#file://}
                case "$path" in /*) mount_ro "$path" ;; esac
            done
        done < <(sed -n -E 's/^[[:space:]]*(find-links|find_links|constraint|constraints|requirement|index-url|index_url|extra-index-url|extra_index_url|cert|client-cert)[[:space:]]*=[[:space:]]*//p' "$f")
    done
fi

# build IMAGE CONTEXT ro|overlay [engine build options...]
# The host's /etc/ssl/certs is mounted read-only where pip runs (it must see the host's own bundle),
# and as a throw-away overlay where only apt runs: there package scripts write certificates (ssl-cert's
# snakeoil pair), and the host's files stay as they are either way.
build() {
    local image=$1 context=$2 certs=$3 flags=("${build_flags[@]}")
    shift 3
    if [ "$engine" = podman ] && [ -d /etc/ssl/certs ]; then
        if [ "$certs" = overlay ]; then flags+=(-v /etc/ssl/certs:/etc/ssl/certs:O)
        else flags+=(-v /etc/ssl/certs:/etc/ssl/certs:ro); fi
    fi
    "$engine" build "${flags[@]}" "$@" -t "$image" "$context"
}

# --- the Debian image ----------------------------------------------------------------------------

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
debian_image=localhost/clinic-debian:${codename:-unknown}

# The host's Debian mirrors for this release, as apt itself reads them (deb822 *.sources and one-line
# *.list alike): lines "URI SUITE COMPONENT" for the release and its -updates and -security suites.
host_debian_sources() {
    apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)' \
        | awk -v c="$codename" '$4 == "deb" && ($2 == c || $2 == c "-updates" || $2 == c "-security") { print $1, $2, $3 }' \
        | sort -u
}

make_debian_tarball() {
    local tarball=$1 rootfs=$cache/debian-$codename.rootfs sources mirror
    command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
    command -v apt-get >/dev/null || fail "the Debian image is made from this machine's apt sources: apt-get not found"
    sources=$(host_debian_sources)
    mirror=$(awk -v c="$codename" '$2 == c { print $1; exit }' <<<"$sources")
    [ -n "$mirror" ] || fail "no '$codename' suite in this machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/)"
    echo "mirror: $mirror"
    # A run cut short may have left /proc mounted inside: never descend into a mounted file system.
    umount "$rootfs/proc" 2>/dev/null || true
    rm -rf --one-file-system "$rootfs"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=ca-certificates "$codename" "$rootfs" "$mirror"

    # The same mirrors (updates and security too) inside, in deb822 form.
    rm -f "$rootfs/etc/apt/sources.list"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed_by=
    [ -f "$rootfs$keyring" ] && signed_by="Signed-By: $keyring"
    awk '{ suites[$1] = suites[$1] (index(" " suites[$1] " ", " " $2 " ") ? "" : " " $2);
           comps[$1] = comps[$1] (index(" " comps[$1] " ", " " $3 " ") ? "" : " " $3) }
         END { for (u in suites) printf "Types: deb\nURIs: %s\nSuites:%s\nComponents:%s\n%s\n\n", u, suites[u], comps[u], SIGNED }' \
        SIGNED="$signed_by" <<<"$sources" >"$rootfs/etc/apt/sources.list.d/debian.sources"

    # apt as in a container: no recommends, no kept .debs or lists, the host's date checks (a snapshot
    # mirror's Release files are past their Valid-Until date).
    {
        echo 'APT::Install-Recommends "false";'
        echo 'APT::Install-Suggests "false";'
        echo 'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";'
        echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };'
        echo 'Acquire::Languages "none";'
        apt-config dump Acquire::Check-Valid-Until Acquire::Check-Date Acquire::http::Proxy Acquire::https::Proxy \
            | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' || true
    } >"$rootfs/etc/apt/apt.conf.d/90clinic-container"
    # This release's updates and security fixes now, so that the builds on this image upgrade nothing
    # (ca-certificates above all: the builds see the host's /etc/ssl/certs, read-only, in its place).
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca.crt"
    mount -t proc proc "$rootfs/proc"
    trap "umount '$rootfs/proc' 2>/dev/null || true" EXIT
    local upgraded=0
    chroot "$rootfs" sh -c 'apt-get -o Acquire::https::CaInfo=/tmp/host-ca.crt update -q \
        && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::https::CaInfo=/tmp/host-ca.crt -y -q upgrade' \
        && upgraded=1
    umount "$rootfs/proc"
    trap - EXIT
    [ "$upgraded" = 1 ] || fail "apt-get upgrade in the new Debian root file system failed"
    # No manuals or documentation in the images (copyright files stay).
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90clinic-nodoc" <<'EOF'
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
EOF
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
        "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
    find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    # The engine provides these per container.
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/hostname"
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf --one-file-system "$rootfs"
}

import_debian() {
    local tarball=$1
    "$engine" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$tarball" "$debian_image"
}

if [ "$refresh" = 1 ]; then
    build_flags+=(--no-cache)
fi

if [ "$build_base" = 1 ]; then
    # Refreshed: a new tarball, imported over the old image's name.
    [ "$refresh" = 0 ] || rm -f "$cache/debian-$codename.tar"
    [ "$(id -u)" = 0 ] || fail "the base images are made with debootstrap and chroot: run as root (or --services-only)"
    [ -n "$codename" ] || fail "no VERSION_CODENAME in /etc/os-release: the Debian image follows this machine's release"
    if [ "$refresh" = 0 ] && image_exists "$debian_image"; then
        echo "==> $debian_image: present, kept"
    else
        tarball=$cache/debian-$codename.tar
        if [ -f "$tarball" ]; then
            echo "==> debootstrap: $tarball present, kept"
        else
            step "debootstrap $codename" make_debian_tarball "$tarball"
        fi
        step "import $debian_image" import_debian "$tarball"
    fi

    # aiosmtpd and what it needs, at the versions the project's constraints lock.
    mail_sink_pins=$(grep -E -i '^(aiosmtpd|atpublic|attrs)==' "$repo/constraints.txt" | tr '\n' ' ' || true)
    [ -n "$mail_sink_pins" ] || mail_sink_pins=aiosmtpd

    step "localhost/clinic-python:3.11" build localhost/clinic-python:3.11 "$here/python" ro \
        --build-arg "DEBIAN_IMAGE=$debian_image"
    step "localhost/clinic-postgres:15" build localhost/clinic-postgres:15 "$here/postgres" overlay \
        --build-arg "DEBIAN_IMAGE=$debian_image"
    step "localhost/clinic-rabbitmq:3" build localhost/clinic-rabbitmq:3 "$here/rabbitmq" overlay \
        --build-arg "DEBIAN_IMAGE=$debian_image"
    step "localhost/clinic-redis:7" build localhost/clinic-redis:7 "$here/redis" overlay \
        --build-arg "DEBIAN_IMAGE=$debian_image"
    step "localhost/clinic-mail-sink:latest" build localhost/clinic-mail-sink:latest "$here/mail-sink" ro \
        --build-arg "PYTHON_IMAGE=localhost/clinic-python:3.11" --build-arg "PINS=$mail_sink_pins"
fi

if [ "$build_services" = 1 ]; then
    image_exists localhost/clinic-python:3.11 \
        || fail "localhost/clinic-python:3.11 is missing: run deploy/images/build.sh without --services-only first"
    for service in "${services[@]}"; do
        step "localhost/clinic-$service:latest" build "localhost/clinic-$service:latest" "$repo" ro \
            -f "$repo/deploy/Dockerfile" --build-arg "SERVICE=$service" \
            --build-arg "PYTHON_IMAGE=localhost/clinic-python:3.11"
    done
fi

echo "all images built in $((SECONDS - started_all))s"
