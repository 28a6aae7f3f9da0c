#!/bin/sh
# Makes sure /usr/bin/chromium is there: the status page's browser test
# (tests/router/status/test_status_browser.py) drives Debian's Chromium through
# Playwright for Python, using this executable (no `playwright install`, no browser
# downloads). Installs the Debian package `chromium` when it is missing (sudo only when
# not root), running `apt-get update` once first, without its recommends (a desktop's worth
# of daemons) but with one font, fonts-dejavu-core, so a bare image's screenshot of the page
# shows text rather than boxes. Idempotent and silent when Chromium is there.
set -eu

if [ -x /usr/bin/chromium ]; then
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

echo "/usr/bin/chromium not found; installing the Debian package chromium" >&2
apt update -qq >/dev/null
apt install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null

if [ ! -x /usr/bin/chromium ]; then
    echo "/usr/bin/chromium is still missing after installing; install Chromium by hand" >&2
    exit 1
fi
