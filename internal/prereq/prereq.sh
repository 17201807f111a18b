#!/usr/bin/env bash
# prereq.sh test|demo: make sure the Debian packages that `make test` or `make demo` needs are
# installed. As root it installs what is missing; otherwise it stops and prints the exact
# apt-get line to run. Set ACE_PG_BINDIR to use a PostgreSQL 15 installed elsewhere.
set -euo pipefail

target=${1:?usage: prereq.sh test|demo}
packages=()
if [ -z "${ACE_PG_BINDIR:-}" ] && [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  packages+=(postgresql-15)
fi
command -v psql >/dev/null || packages+=(postgresql-client-15)
if [ "$target" = test ]; then
  # The repair tests build a real pglogical cluster; the HTML report is checked in Chromium; the
  # schedules' pg_cron path (docs/schedules.md) runs a real pg_cron.
  dpkg -s postgresql-15-pglogical >/dev/null 2>&1 || packages+=(postgresql-15-pglogical)
  dpkg -s postgresql-15-cron >/dev/null 2>&1 || packages+=(postgresql-15-cron)
  [ -x /usr/bin/chromium ] || packages+=(chromium)
fi
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "make $target needs Debian packages that are not installed: ${packages[*]}" >&2
  echo "Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
  exit 2
fi
echo "installing for make $target: ${packages[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
