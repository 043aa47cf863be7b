#!/bin/sh
# azd postprovision hook (azure.yaml): wait until the role assignments the deployment just made have
# reached Storage, before `azd up` publishes the code. scripts/azd-postprovision.ps1 is its
# PowerShell twin (Windows).
#
# Azure RBAC takes minutes to reach a storage account's data plane. A first publish right after
# provisioning can meet a 403: the platform writes the package to the deployment container with the
# Function App's identity, whose Blob role is minutes old. The hook cannot sign in as that identity,
# so it proves propagation with the deployer's own data roles, made by the same deployment on the
# same account (azd passes itself as operatorPrincipalId): one read each of the payload container,
# the outbound queue and the state table, with azd's own token, until all three answer 200.
#
# Waits at most MAILGW_ROLE_WAIT_SECONDS (default 600; 0: do not wait) in all, backing off from
# MAILGW_ROLE_WAIT_FIRST_DELAY seconds (default 5) to one try a minute. If the roles have still not
# arrived, it stops `azd up` before the publish; docs/deploy.md says what to do then.
# Reads from the azd environment: the outputs STORAGE_BLOB_ENDPOINT, STORAGE_QUEUE_ENDPOINT,
# STORAGE_TABLE_ENDPOINT, MAILGW_PAYLOAD_CONTAINER, MAILGW_QUEUE, MAILGW_STATE_TABLE, and
# OPERATOR_PRINCIPAL_ID (azd does not store AZURE_PRINCIPAL_ID in the environment hooks see).
set -eu

timeout=${MAILGW_ROLE_WAIT_SECONDS:-600}
delay=${MAILGW_ROLE_WAIT_FIRST_DELAY:-5}
storage_version=2019-02-02 # x-ms-version: Entra ID for all three services (the Tables SDK's version)

say() { echo "mailgw postprovision: $*" >&2; }

if [ -z "${OPERATOR_PRINCIPAL_ID:-}" ]; then
  say "no operator was granted (OPERATOR_PRINCIPAL_ID is empty), so no role to check storage with; not waiting."
  exit 0
fi

if [ "$timeout" -eq 0 ]; then
  say "MAILGW_ROLE_WAIT_SECONDS=0: not waiting for the role assignments."
  exit 0
fi
command -v curl >/dev/null 2>&1 || {
  say "needs curl to reach Storage; install it, or skip the wait with MAILGW_ROLE_WAIT_SECONDS=0."
  exit 1
}

blob="${STORAGE_BLOB_ENDPOINT:?output of infra/main.bicep}${MAILGW_PAYLOAD_CONTAINER:?}?restype=container&comp=list&maxresults=1"
queue="${STORAGE_QUEUE_ENDPOINT:?output of infra/main.bicep}${MAILGW_QUEUE:?}/messages?peekonly=true&numofmessages=1"
table="${STORAGE_TABLE_ENDPOINT:?output of infra/main.bicep}${MAILGW_STATE_TABLE:?}()?\$top=1"

token=$(azd auth token --scope https://storage.azure.com/.default --output json |
  sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
if [ -z "$token" ]; then
  say "azd auth token gave no token for Storage; run azd auth login, then azd up again."
  exit 1
fi

# status URL: the HTTP status of one read (000 when Storage could not be reached at all).
status() {
  curl --silent --show-error --max-time 30 --output /dev/null --write-out '%{http_code}' \
    --header "Authorization: Bearer $token" --header "x-ms-version: $storage_version" \
    --header "Accept: application/json;odata=nometadata" "$1" 2>/dev/null || true
}

waited=0
while :; do
  answers="payload container $(status "$blob"), queue $(status "$queue"), table $(status "$table")"
  case "$answers" in
    "payload container 200, queue 200, table 200")
      say "storage roles are in place (${waited}s)."
      exit 0
      ;;
  esac
  if [ "$waited" -ge "$timeout" ]; then
    say "the role assignments have not reached Storage after ${waited}s ($answers).
  They normally arrive within 10 minutes. The infrastructure is in place: wait a few minutes, then
  run azd deploy (it publishes the code only). A 403 that lasts longer than an hour means a role
  is missing: az role assignment list --all --assignee $OPERATOR_PRINCIPAL_ID -o table (docs/deploy.md)."
    exit 1
  fi
  say "waiting for the role assignments to reach Storage ($answers); next try in ${delay}s."
  sleep "$delay"
  waited=$((waited + delay))
  delay=$((delay * 2))
  [ "$delay" -ge 1 ] || delay=1
  [ "$delay" -le 60 ] || delay=60
done
