# azd postprovision hook on Windows (azure.yaml): the twin of scripts/azd-postprovision.sh, which
# says why. Waits (at most MAILGW_ROLE_WAIT_SECONDS, default 600; 0: not at all) until the deployer's
# data roles, made by the same deployment on the same storage account, answer: a proof that the
# role assignments have reached Storage before `azd up` publishes the code.
$ErrorActionPreference = 'Stop'

$timeout = if ($env:MAILGW_ROLE_WAIT_SECONDS) { [int] $env:MAILGW_ROLE_WAIT_SECONDS } else { 600 }
$delay = if ($env:MAILGW_ROLE_WAIT_FIRST_DELAY) { [int] $env:MAILGW_ROLE_WAIT_FIRST_DELAY } else { 5 }

function Say([string] $Message) { [Console]::Error.WriteLine("mailgw postprovision: $Message") }

if (-not $env:OPERATOR_PRINCIPAL_ID) {
    Say 'no operator was granted (OPERATOR_PRINCIPAL_ID is empty), so no role to check storage with; not waiting.'
    exit 0
}
if ($timeout -eq 0) {
    Say 'MAILGW_ROLE_WAIT_SECONDS=0: not waiting for the role assignments.'
    exit 0
}

$reads = [ordered] @{
    'payload container' = "$($env:STORAGE_BLOB_ENDPOINT)$($env:MAILGW_PAYLOAD_CONTAINER)?restype=container&comp=list&maxresults=1"
    'queue'             = "$($env:STORAGE_QUEUE_ENDPOINT)$($env:MAILGW_QUEUE)/messages?peekonly=true&numofmessages=1"
    'table'             = "$($env:STORAGE_TABLE_ENDPOINT)$($env:MAILGW_STATE_TABLE)()?`$top=1"
}

$token = ((azd auth token --scope https://storage.azure.com/.default --output json) -join "`n" | ConvertFrom-Json).token
if (-not $token) {
    Say 'azd auth token gave no token for Storage; run azd auth login, then azd up again.'
    exit 1
}
$headers = @{
    'Authorization' = "Bearer $token"
    'x-ms-version'  = '2019-02-02'
    'Accept'        = 'application/json;odata=nometadata'
}

function Get-Status([string] $Uri) {
    try {
        return (Invoke-WebRequest -Uri $Uri -Headers $headers -TimeoutSec 30 -UseBasicParsing).StatusCode
    }
    catch {
        if ($_.Exception.Response) { return [int] $_.Exception.Response.StatusCode }
        return 0
    }
}

$waited = 0
while ($true) {
    $answers = ($reads.GetEnumerator() | ForEach-Object { "$($_.Key) $(Get-Status $_.Value)" }) -join ', '
    if ($answers -eq 'payload container 200, queue 200, table 200') {
        Say "storage roles are in place ($($waited)s)."
        exit 0
    }
    if ($waited -ge $timeout) {
        Say ("the role assignments have not reached Storage after $($waited)s ($answers). They normally " +
            'arrive within 10 minutes. The infrastructure is in place: wait a few minutes, then run azd deploy. ' +
            "A 403 that lasts longer than an hour means a role is missing: az role assignment list --all --assignee $($env:OPERATOR_PRINCIPAL_ID) -o table (docs/deploy.md).")
        exit 1
    }
    Say "waiting for the role assignments to reach Storage ($answers); next try in $($delay)s."
    Start-Sleep -Seconds $delay
    $waited += $delay
    $delay = [Math]::Min([Math]::Max($delay * 2, 1), 60)
}
