#!/bin/sh
# Makes sure `redis-server` is on PATH: the RedisStore tests start a throwaway one.
# Installs the Debian package when it is missing (sudo only when not root); runs
# `apt-get update` only if the first install fails, e.g. on a fresh image with no lists.
# Idempotent and silent when redis-server is already there.
set -eu

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
else
    SUDO="sudo"
fi

apt() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

echo "redis-server not found; installing the Debian package redis-server" >&2
if ! apt install -y -qq redis-server >/dev/null 2>&1; then
    apt update -qq >/dev/null
    apt install -y -qq redis-server >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is still not on PATH after installing; install Redis by hand" >&2
    exit 1
fi
