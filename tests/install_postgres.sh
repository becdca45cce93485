#!/usr/bin/env bash
# The PostgreSQL tests start their own server on 127.0.0.1 (tests/pg_server.py) from Debian's
# package: install it when it is missing, and fail loudly when that is impossible (the tests would
# otherwise skip the PostgreSQL store).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15 \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { echo "PostgreSQL server binaries not installed" >&2; exit 1; }
