# azd preprovision hook on Windows (azure.yaml): the twin of scripts/azd-preprovision.sh, which says
# why each minimum matters. Stops before anything is deployed when azd (or the Bicep that
# AZD_BICEP_TOOL_PATH names) is too old for infra/main.bicep; warns about an old Azure CLI.
$ErrorActionPreference = 'Stop'

$MIN_AZD = '1.17.1'
$MIN_BICEP = '0.36.1'
$MIN_AZ = '2.60.0'

function Get-FirstVersion([string] $Text) {
    if ($Text -match '(\d+\.\d+\.\d+)') { return [version] $Matches[1] }
    return $null
}

function Stop-Provision([string] $Message) {
    Write-Error "mailgw preprovision: $Message" -ErrorAction Continue
    exit 1
}

$azdVersion = Get-FirstVersion ((azd version 2>$null) -join ' ')
if (-not $azdVersion) { Stop-Provision 'cannot read the version of azd (azd version).' }
if ($azdVersion -lt [version] $MIN_AZD) {
    Stop-Provision ("azd $azdVersion is too old: mailgw needs azd $MIN_AZD or later. Older azd ships a Bicep " +
        'without fail() and the Microsoft Graph extension, and passes AZURE_PRINCIPAL_TYPE=User even when it ' +
        'signed in as a service principal (UnmatchedPrincipalType). Upgrade: https://aka.ms/azd-install')
}

$bicepVersion = $null
if ($env:AZD_BICEP_TOOL_PATH) {
    $bicepVersion = Get-FirstVersion ((& $env:AZD_BICEP_TOOL_PATH --version 2>$null) -join ' ')
    if (-not $bicepVersion) { Stop-Provision "cannot run AZD_BICEP_TOOL_PATH=$($env:AZD_BICEP_TOOL_PATH) --version." }
    if ($bicepVersion -lt [version] $MIN_BICEP) {
        Stop-Provision ("Bicep $bicepVersion (AZD_BICEP_TOOL_PATH) is too old: mailgw needs Bicep $MIN_BICEP or later " +
            '(the Microsoft Graph extension; fail() needs 0.33.13). Upgrade it, or unset AZD_BICEP_TOOL_PATH.')
    }
}

if (Get-Command az -ErrorAction SilentlyContinue) {
    $azVersion = Get-FirstVersion (((az version --output json 2>$null) -join "`n" | ConvertFrom-Json).'azure-cli')
    if (-not $azVersion -or $azVersion -lt [version] $MIN_AZ) {
        Write-Warning "mailgw preprovision: Azure CLI $azVersion found; docs/deploy.md's later steps need $MIN_AZ or later (az upgrade)."
    }
}

# AZURE_PRINCIPAL_TYPE (infra/main.parameters.json, default User): from who the Azure CLI says is
# signed in, unless set already, so that a service principal (any CI) gets no UnmatchedPrincipalType.
if ($env:AZURE_PRINCIPAL_TYPE) {
    Write-Host "mailgw preprovision: deploying as AZURE_PRINCIPAL_TYPE=$($env:AZURE_PRINCIPAL_TYPE) (set in the azd environment)."
} else {
    $signedIn = $null
    if (Get-Command az -ErrorAction SilentlyContinue) {
        $signedIn = (az account show --query user.type --output tsv 2>$null)
    }
    $principalType = switch ($signedIn) { 'servicePrincipal' { 'ServicePrincipal' } 'user' { 'User' } default { $null } }
    if ($principalType) {
        azd env set AZURE_PRINCIPAL_TYPE $principalType | Out-Null
        if ($LASTEXITCODE -ne 0) { Stop-Provision "azd env set AZURE_PRINCIPAL_TYPE $principalType failed." }
        Write-Host "mailgw preprovision: signed in as a $signedIn (az account show): AZURE_PRINCIPAL_TYPE=$principalType."
    } else {
        Write-Warning ('mailgw preprovision: could not tell who is signed in (az account show); AZURE_PRINCIPAL_TYPE stays User. ' +
            'Deploying as a service principal? azd env set AZURE_PRINCIPAL_TYPE ServicePrincipal')
    }
}

Write-Host "mailgw preprovision: azd $azdVersion$(if ($bicepVersion) { ", Bicep $bicepVersion" }): fine."
