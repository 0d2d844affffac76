#!/bin/sh
# As the official redis image: options alone (`--maxmemory 64mb`) or a .conf file run redis-server, and
# protected mode is off unless the command line says otherwise (options given later win). Without
# a configuration file redis-server would only answer on the loopback address of its own container.
set -e
case "$1" in
    -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
    shift
    case "$1" in
        *.conf) conf=$1; shift; set -- redis-server "$conf" --protected-mode no "$@" ;;   # the file comes first
        *) set -- redis-server --protected-mode no "$@" ;;
    esac
fi
exec "$@"
