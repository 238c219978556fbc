#!/usr/bin/env bash
# System packages the fault, browser and CLI tests need:
#   pgbouncer    D8: the worker behind PgBouncer in transaction pooling mode
#   libfaketime  D9: worker clocks skewed with LD_PRELOAD=libfaketime.so.1
#   tmux         tests/cli/test_newcomer_session.py: a shell driven in tmux
#   chromium     tests/dashboard: Playwright drives /usr/bin/chromium (never
#                `playwright install`: the browser comes from Debian)
#   chromium-driver  /usr/bin/chromedriver, for Selenium users of the same browser
# Idempotent: does nothing when all are present. Installing needs root (apt-get).
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

have_tmux() {
    command -v tmux >/dev/null 2>&1
}

have_chromium() {
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
}

if have_pgbouncer && faketime_lib >/dev/null && have_tmux && have_chromium; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: pgbouncer, libfaketime, tmux, chromium and chromium-driver are needed by the tests; as root run: apt-get install -y pgbouncer libfaketime tmux chromium chromium-driver" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The pgbouncer package enables a system service; tests start their own instance.
apt-get install -y -qq --no-install-recommends pgbouncer libfaketime tmux chromium \
    chromium-driver >/dev/null

if ! have_pgbouncer || ! faketime_lib >/dev/null || ! have_tmux || ! have_chromium; then
    echo "install-test-deps: apt-get ran but pgbouncer, libfaketime.so.1, tmux, /usr/bin/chromium or /usr/bin/chromedriver is still missing" >&2
    exit 1
fi
echo "install-test-deps: installed pgbouncer, libfaketime, tmux, chromium and chromium-driver"
