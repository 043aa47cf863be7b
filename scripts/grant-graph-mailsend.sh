#!/usr/bin/env bash
# Grant the gateway's managed identity the Microsoft Graph application permission Mail.Send (and
# Mail.ReadWrite with --draft) in Entra ID: an app role assignment on the Microsoft Graph service
# principal, created through appRoleAssignedTo.
#
# NOT THE RECOMMENDED WAY. An Entra grant has no mailbox scope: the identity can then send as ANY
# mailbox in the tenant. Prefer Exchange Online RBAC for Applications, scoped to your sender
# mailboxes (scripts/grant-exchange-rbac.ps1), and never use both: Exchange adds an Entra grant to
# the RBAC grants, so the RBAC scope would stop limiting anything. Read
# docs/graph-permissions.md, sections 3-5, first.
#
# Idempotent: a role already granted is reported and left alone. Needs an admin who may grant app
# roles (Privileged Role Administrator, or AppRoleAssignment.ReadWrite.All + Application.Read.All).
#
# Usage:
#   scripts/grant-graph-mailsend.sh --principal-id <IDENTITY_PRINCIPAL_ID> [options]
#   scripts/grant-graph-mailsend.sh --resource-group <rg> --identity <identity-name> [options]
# Options:
#   --draft                also grant Mail.ReadWrite (MAILGW_GRAPH_MODE=draft)
#   --graph-endpoint URL   Graph root of a national cloud (default https://graph.microsoft.com)
#   --dry-run              show what would be granted, change nothing
#   --yes                  do not ask for confirmation
set -euo pipefail

GRAPH_APP_ID="00000003-0000-0000-c000-000000000000" # Microsoft Graph, in every tenant and cloud
MAIL_SEND_ID="b633e1c5-b582-4048-a93e-9f11b44c7e96"
MAIL_READWRITE_ID="e2a3a72e-5f79-4c64-b1b1-878b674786c9"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "${1:-2}"
}

die() {
  echo "error: $*" >&2
  exit 1
}

principal_id=""
resource_group=""
identity_name=""
draft=false
graph_endpoint="https://graph.microsoft.com"
dry_run=false
assume_yes=false

while [[ $# -gt 0 ]]; do
  case "$1" in
    --principal-id) principal_id="${2:?--principal-id needs a value}"; shift 2 ;;
    --resource-group | -g) resource_group="${2:?--resource-group needs a value}"; shift 2 ;;
    --identity | -n) identity_name="${2:?--identity needs a value}"; shift 2 ;;
    --draft) draft=true; shift ;;
    --graph-endpoint) graph_endpoint="${2:?--graph-endpoint needs a value}"; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    --yes | -y) assume_yes=true; shift ;;
    --help | -h) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
graph_endpoint="${graph_endpoint%/}"

command -v az > /dev/null || die "the Azure CLI (az) is required: https://learn.microsoft.com/cli/azure/install-azure-cli"

if [[ -z "$principal_id" ]]; then
  [[ -n "$resource_group" && -n "$identity_name" ]] || usage 2
  principal_id="$(az identity show --resource-group "$resource_group" --name "$identity_name" \
    --query principalId --output tsv)"
fi
[[ "$principal_id" =~ ^[0-9a-fA-F-]{36}$ ]] || die "not an object id: '$principal_id'"

graph_sp_id="$(az ad sp show --id "$GRAPH_APP_ID" --query id --output tsv)"
[[ -n "$graph_sp_id" ]] || die "the Microsoft Graph service principal was not found in this tenant"

roles=("Mail.Send")
if [[ "$draft" == true ]]; then
  roles+=("Mail.ReadWrite")
fi

role_id() {
  case "$1" in
    Mail.Send) echo "$MAIL_SEND_ID" ;;
    Mail.ReadWrite) echo "$MAIL_READWRITE_ID" ;;
  esac
}

# Look each role up by name and check it against the well-known id: a typo cannot grant another role.
for role in "${roles[@]}"; do
  found="$(az ad sp show --id "$GRAPH_APP_ID" \
    --query "appRoles[?value=='$role' && contains(allowedMemberTypes, 'Application')].id | [0]" \
    --output tsv)"
  [[ "$found" == "$(role_id "$role")" ]] || die "Graph app role $role is '$found', expected $(role_id "$role")"
done

existing_assignment() {
  az rest --method GET \
    --uri "$graph_endpoint/v1.0/servicePrincipals/$principal_id/appRoleAssignments" \
    --query "value[?resourceId=='$graph_sp_id' && appRoleId=='$1'].id | [0]" \
    --output tsv
}

to_grant=()
for role in "${roles[@]}"; do
  if [[ -n "$(existing_assignment "$(role_id "$role")")" ]]; then
    echo "already granted: $role ($(role_id "$role")) to $principal_id"
  else
    to_grant+=("$role")
  fi
done

if [[ ${#to_grant[@]} -eq 0 ]]; then
  echo "nothing to do"
  exit 0
fi

cat >&2 << EOF
About to grant Microsoft Graph ${to_grant[*]} (application permission) to $principal_id.
This grant covers EVERY mailbox in the tenant: MAILGW_ALLOWED_SENDERS is then the only limit.
If this identity has (or will get) Exchange RBAC for Applications assignments, do not grant this:
the Entra grant voids their mailbox scope. See docs/graph-permissions.md, section 4.
EOF

if [[ "$dry_run" == true ]]; then
  echo "dry run: nothing granted"
  exit 0
fi

if [[ "$assume_yes" != true ]]; then
  [[ -t 0 ]] || die "not a terminal: confirm with --yes"
  read -r -p "Type 'grant' to continue: " answer
  [[ "$answer" == "grant" ]] || die "cancelled"
fi

for role in "${to_grant[@]}"; do
  az rest --method POST \
    --uri "$graph_endpoint/v1.0/servicePrincipals/$graph_sp_id/appRoleAssignedTo" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"$principal_id\", \"resourceId\": \"$graph_sp_id\", \"appRoleId\": \"$(role_id "$role")\"}" \
    --output none
  echo "granted: $role ($(role_id "$role")) to $principal_id"
done

echo "Managed identity tokens are cached for up to 24 hours: the grant may take that long to apply."
