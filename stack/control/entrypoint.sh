#!/bin/sh
# pgha-control server|worker [PREFECT ARGS...]: run `prefect ARGS` with the API auth secret.
#
# The secret ("pgha:<token>") is read from a file mounted read-only at /run/pgha/api-auth and
# exported only into this process's environment (PREFECT_SERVER_API_AUTH_STRING for the server,
# PREFECT_API_AUTH_STRING for the worker and the flow runs it starts): it is never in the
# container's configuration (env, labels, command) nor in the image, so `docker inspect` does
# not show it; only /proc/<pid>/environ inside the container does.
set -eu
role="${1:-}"
[ $# -gt 0 ] && shift
auth_file=/run/pgha/api-auth

if [ -r "$auth_file" ]; then
  auth="$(cat "$auth_file")"
  case "$role" in
    server) export PREFECT_SERVER_API_AUTH_STRING="$auth" ;;
    worker) export PREFECT_API_AUTH_STRING="$auth" ;;
  esac
  unset auth
fi

# A server on an empty volume with the default SQLite database starts from the image's migrated
# copy (written under a temporary name, then renamed: a crash mid-copy leaves no half database).
template=/opt/pgha/prefect-template/prefect.db
if [ "$role" = server ] && [ -n "${PREFECT_HOME:-}" ] && [ -s "$template" ] \
   && [ -z "${PREFECT_SERVER_DATABASE_CONNECTION_URL:-}${PREFECT_API_DATABASE_CONNECTION_URL:-}" ] \
   && [ ! -e "$PREFECT_HOME/prefect.db" ]; then
  cp "$template" "$PREFECT_HOME/.prefect.db.new" && mv "$PREFECT_HOME/.prefect.db.new" "$PREFECT_HOME/prefect.db"
fi

case "$role" in
  server|worker) exec python -m prefect "$@" ;;
  *)
    echo "pgha-control: unknown role '$role' (expected server or worker)" >&2
    exit 64
    ;;
esac
