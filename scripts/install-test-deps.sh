#!/usr/bin/env bash
# System packages the fault tests need (tests/faults, RELIABILITY.md D8/D9):
#   pgbouncer    D8: the worker behind PgBouncer in transaction pooling mode
#   libfaketime  D9: worker clocks skewed with LD_PRELOAD=libfaketime.so.1
# Idempotent: does nothing when both are present. Installing needs root (apt-get).
set -euo pipefail

have_pgbouncer() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

faketime_lib() {
    local path
    for path in /usr/lib/*-linux-gnu/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        if [ -f "$path" ]; then
            echo "$path"
            return 0
        fi
    done
    return 1
}

if have_pgbouncer && faketime_lib >/dev/null; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: pgbouncer and libfaketime are needed by the fault tests; as root run: apt-get install -y pgbouncer libfaketime" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The pgbouncer package enables a system service; tests start their own instance.
apt-get install -y -qq --no-install-recommends pgbouncer libfaketime >/dev/null

if ! have_pgbouncer || ! faketime_lib >/dev/null; then
    echo "install-test-deps: apt-get ran but pgbouncer or libfaketime.so.1 is still missing" >&2
    exit 1
fi
echo "install-test-deps: installed pgbouncer and libfaketime"
