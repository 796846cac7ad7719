#!/usr/bin/env bash
# A PostgreSQL server for the tests and benchmarks, from Debian's packages.
#
# Installs the server when it is missing, starts the first cluster with
# pg_ctlcluster, and makes a role that may create databases (every test
# creates its own, fresh, and drops it). Prints the admin URL the tests read
# from HODEI_TEST_DATABASE_URL. Idempotent: run it as often as you like.
#
#   eval "$(scripts/postgres.sh)"     # exports HODEI_TEST_DATABASE_URL
set -euo pipefail

ROLE=hodei
PASSWORD=hodei
PORT=${HODEI_PG_PORT:-5432}

# shellcheck source=scripts/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages" >&2
  apt_get update -qq >&2
  apt_get install -y -qq postgresql >&2
fi

# The first cluster Debian made (e.g. "15 main"); create one if there is none.
read -r VERSION CLUSTER _ < <(pg_lsclusters --no-header | head -n1) || true
if [ -z "${VERSION:-}" ]; then
  VERSION=$(ls /usr/lib/postgresql | sort -n | tail -n1)
  CLUSTER=main
  as_root pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >&2
fi
if ! pg_lsclusters --no-header | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $4}' | grep -q online; then
  as_root pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi
PORT=$(pg_lsclusters --no-header | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $3}')

psql_admin() {
  as_root su postgres -c "psql -p $PORT -v ON_ERROR_STOP=1 -qAt -c \"$1\"" >&2
}
# Tests open many connections at once (several hosts, each with a pool).
for _ in $(seq 1 30); do
  as_root su postgres -c "pg_isready -q -p $PORT" && break
  sleep 0.5
done
if ! as_root su postgres -c "psql -p $PORT -qAt -c \"select 1 from pg_roles where rolname='$ROLE'\"" | grep -q 1; then
  psql_admin "create role $ROLE login createdb password '$PASSWORD'"
fi
if ! as_root su postgres -c "psql -p $PORT -qAt -c \"select 1 from pg_database where datname='$ROLE'\"" | grep -q 1; then
  psql_admin "create database $ROLE owner $ROLE"
fi

echo "export HODEI_TEST_DATABASE_URL=postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/$ROLE"
