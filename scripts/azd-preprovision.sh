#!/bin/sh
# azd preprovision hook (azure.yaml): stop before anything is deployed when a tool is too old for
# infra/main.bicep, with a message that says which and why. scripts/azd-preprovision.ps1 is its
# PowerShell twin (Windows).
#
# - azd 1.17.1 or later. It ships Bicep 0.36.1 (azd before 1.12 ships 0.32.4, which knows neither
#   fail() nor the Microsoft Graph extension), and it sets AZURE_PRINCIPAL_TYPE from the account it
#   signed in with. Older azd always says User, so `azd up` run by a service principal (any CI)
#   fails with UnmatchedPrincipalType on the deployer's role assignments.
# - Bicep 0.36.1 or later when AZD_BICEP_TOOL_PATH points azd at a Bicep of your own: the Graph
#   extension (microsoftgraph/v1.0:1.0.0) needs 0.36.1, fail() 0.33.13.
# - Azure CLI 2.60 or later, if installed: docs/deploy.md's later steps (keys, Flex Consumption
#   commands) use it. A warning only, since `azd up` itself does not need it.
# - AZURE_PRINCIPAL_TYPE (infra/main.parameters.json, default User): unless it is set already, the
#   hook asks the Azure CLI who is signed in and sets it with `azd env set`, so that `azd up` run
#   by a service principal (any CI) does not fail with UnmatchedPrincipalType on the deployer's
#   role assignments. Without az, or signed out, it says so and leaves the default.
set -eu

MIN_AZD=1.17.1
MIN_BICEP=0.36.1
MIN_AZ=2.60.0

# at_least HAVE WANT: true when version HAVE >= WANT (numeric x.y.z; a suffix like -beta.1 is
# ignored, so a pre-release counts as its release).
at_least() {
  have=${1%%[!0-9.]*}
  printf '%s\n%s\n' "$2" "$have" | sort -t. -k1,1n -k2,2n -k3,3n -C
}

# first_version TEXT: the first x.y.z in TEXT.
first_version() {
  printf '%s\n' "$1" | sed -n 's/[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*[^ ]*\).*/\1/p' | head -n 1
}

fail() {
  echo "mailgw preprovision: $*" >&2
  exit 1
}

azd_version=$(first_version "$(azd version 2>/dev/null || true)")
[ -n "$azd_version" ] || fail "cannot read the version of azd (azd version)."
at_least "$azd_version" "$MIN_AZD" || fail "azd $azd_version is too old: mailgw needs azd $MIN_AZD or later.
  Older azd ships a Bicep without fail() and the Microsoft Graph extension, and passes
  AZURE_PRINCIPAL_TYPE=User even when it signed in as a service principal (UnmatchedPrincipalType).
  Upgrade: https://aka.ms/azd-install, then run azd up again."

if [ -n "${AZD_BICEP_TOOL_PATH:-}" ]; then
  bicep_version=$(first_version "$("$AZD_BICEP_TOOL_PATH" --version 2>/dev/null || true)")
  [ -n "$bicep_version" ] || fail "cannot run AZD_BICEP_TOOL_PATH=$AZD_BICEP_TOOL_PATH --version."
  at_least "$bicep_version" "$MIN_BICEP" || fail "Bicep $bicep_version (AZD_BICEP_TOOL_PATH) is too old: mailgw needs Bicep $MIN_BICEP or later
  (the Microsoft Graph extension; fail() needs 0.33.13). Upgrade it, or unset AZD_BICEP_TOOL_PATH to use azd's own."
fi

if command -v az >/dev/null 2>&1; then
  az_version=$(az version --query '"azure-cli"' --output tsv 2>/dev/null || true)
  if [ -z "$az_version" ] || ! at_least "$az_version" "$MIN_AZ"; then
    echo "mailgw preprovision: warning: Azure CLI ${az_version:-of unknown version} found; docs/deploy.md's later steps need $MIN_AZ or later (az upgrade)." >&2
  fi
fi

if [ -n "${AZURE_PRINCIPAL_TYPE:-}" ]; then
  echo "mailgw preprovision: deploying as AZURE_PRINCIPAL_TYPE=$AZURE_PRINCIPAL_TYPE (set in the azd environment)."
else
  signed_in=
  if command -v az >/dev/null 2>&1; then
    signed_in=$(az account show --query user.type --output tsv 2>/dev/null || true)
  fi
  case "$signed_in" in
    servicePrincipal) principal_type=ServicePrincipal ;;
    user) principal_type=User ;;
    *) principal_type= ;;
  esac
  if [ -n "$principal_type" ]; then
    azd env set AZURE_PRINCIPAL_TYPE "$principal_type" >/dev/null || fail "azd env set AZURE_PRINCIPAL_TYPE $principal_type failed."
    echo "mailgw preprovision: signed in as a $signed_in (az account show): AZURE_PRINCIPAL_TYPE=$principal_type."
  else
    echo "mailgw preprovision: could not tell who is signed in (az account show); AZURE_PRINCIPAL_TYPE stays User." >&2
    echo "  Deploying as a service principal? azd env set AZURE_PRINCIPAL_TYPE ServicePrincipal" >&2
  fi
fi

echo "mailgw preprovision: azd $azd_version${bicep_version:+, Bicep $bicep_version}: fine."
