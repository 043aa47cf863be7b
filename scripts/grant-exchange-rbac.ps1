<#
.SYNOPSIS
    Lets the mailgw identity send mail as your sender mailboxes, and no others: Exchange Online RBAC
    for Applications, scoped to a management scope (the recommended grant).

.DESCRIPTION
    The steps of docs/graph-permissions.md, section 3, in one idempotent script:
      1. New-ServicePrincipal: register the identity's service principal with Exchange.
      2. Mark the sender mailboxes (a custom attribute, or membership of a group) and make a
         management scope of exactly them (New-ManagementScope).
      3. New-ManagementRoleAssignment -Role "Application Mail.Send" within that scope, plus
         "Application Mail.ReadWrite" with -DraftMode (MAILGW_GRAPH_MODE=draft).
      4. Test-ServicePrincipalAuthorization: every sender mailbox must be InScope, and the
         -OutsideMailbox (one that must NOT be usable) must not be.
    What already exists is left alone, so the script can be run again to add mailboxes.

    Do not also grant Mail.Send in Entra ID (scripts/grant-graph-mailsend.sh, or
    grantGraphMailSendInEntra in the Bicep): Exchange adds an Entra grant to these RBAC grants, so
    the scope would no longer limit anything, and Test-ServicePrincipalAuthorization would not show
    it (docs/graph-permissions.md, section 4).

    Needs PowerShell 7, the ExchangeOnlineManagement module, and Connect-ExchangeOnline as a member
    of Organization Management (an Exchange Administrator). Cross-tenant mode: run it in the MAIL
    tenant with the app registration's client id and the object id of its service principal THERE.

.PARAMETER AppId
    The identity's application (client) id: the Bicep output IDENTITY_CLIENT_ID (az identity show
    --query clientId). Cross-tenant: CROSS_TENANT_APP_CLIENT_ID.

.PARAMETER ObjectId
    The object id of the identity's SERVICE PRINCIPAL (Enterprise applications): the Bicep output
    IDENTITY_PRINCIPAL_ID. Cross-tenant: the object id of the app's service principal in the mail
    tenant (az ad sp show --id <appId> --query id). Never an app registration's object id.

.PARAMETER Mailbox
    The sender mailboxes: the same ones as MAILGW_ALLOWED_SENDERS.

.PARAMETER OutsideMailbox
    A mailbox the gateway must NOT be able to send as; checked to be out of scope.

.PARAMETER ScopeName
    Name of the management scope. Default: mailgw-senders.

.PARAMETER CustomAttribute
    The custom attribute that marks sender mailboxes (pick one nothing else in your tenant uses).
    Default: CustomAttribute1. Ignored with -Group.

.PARAMETER AttributeValue
    The value that marks them. Default: mailgw.

.PARAMETER Group
    Scope by membership of this mail-enabled security group instead of a custom attribute. The
    mailboxes are added as direct members (nested groups do not count). Whoever can change the
    group's membership can widen the scope: keep its owners to administrators.

.PARAMETER DraftMode
    Also assign "Application Mail.ReadWrite" (MAILGW_GRAPH_MODE=draft), in the same scope.

.PARAMETER DisplayName
    Display name of the service principal pointer in Exchange. Default: mailgw.

.EXAMPLE
    Connect-ExchangeOnline -UserPrincipalName admin@contoso.com
    ./scripts/grant-exchange-rbac.ps1 -AppId $env:IDENTITY_CLIENT_ID -ObjectId $env:IDENTITY_PRINCIPAL_ID `
        -Mailbox noreply@contoso.com, billing@contoso.com -OutsideMailbox ceo@contoso.com

.EXAMPLE
    ./scripts/grant-exchange-rbac.ps1 -AppId <appId> -ObjectId <objectId> -Mailbox noreply@contoso.com -WhatIf
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    [Parameter(Mandatory)]
    [ValidatePattern('^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$')]
    [string] $AppId,

    [Parameter(Mandatory)]
    [ValidatePattern('^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$')]
    [string] $ObjectId,

    [Parameter(Mandatory)]
    [string[]] $Mailbox,

    [string] $OutsideMailbox,

    [string] $ScopeName = 'mailgw-senders',

    [ValidatePattern('^CustomAttribute([1-9]|1[0-5])$')]
    [string] $CustomAttribute = 'CustomAttribute1',

    [string] $AttributeValue = 'mailgw',

    [string] $Group,

    [switch] $DraftMode,

    [string] $DisplayName = 'mailgw'
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

if (-not (Get-Command Get-ConnectionInformation -ErrorAction SilentlyContinue) -or
    -not (Get-ConnectionInformation)) {
    throw 'Not connected to Exchange Online: Install-Module ExchangeOnlineManagement; Connect-ExchangeOnline'
}

# 1. The service principal pointer -----------------------------------------------------------------
$pointer = Get-ServicePrincipal -Identity $ObjectId -ErrorAction SilentlyContinue
if ($pointer) {
    if ($pointer.AppId -ne $AppId) {
        throw "Exchange knows $ObjectId with AppId $($pointer.AppId), not ${AppId}: check both ids (section 2 of docs/graph-permissions.md)."
    }
    Write-Host "Service principal already registered: $($pointer.DisplayName) ($ObjectId)"
}
elseif ($PSCmdlet.ShouldProcess($ObjectId, 'New-ServicePrincipal')) {
    # Creates nothing in Entra ID: a pointer to the existing Enterprise application.
    New-ServicePrincipal -AppId $AppId -ObjectId $ObjectId -DisplayName $DisplayName | Out-Null
    Write-Host "Registered service principal $DisplayName ($ObjectId)"
}

# 2. The management scope: exactly the sender mailboxes -----------------------------------------------
if ($Group) {
    $groupObject = Get-Group -Identity $Group
    $members = @(Get-DistributionGroupMember -Identity $Group -ResultSize Unlimited |
            ForEach-Object { $_.PrimarySmtpAddress.ToString().ToLowerInvariant() })
    foreach ($address in $Mailbox) {
        if ($members -notcontains $address.ToLowerInvariant() -and
            $PSCmdlet.ShouldProcess($address, "Add-DistributionGroupMember $Group")) {
            Add-DistributionGroupMember -Identity $Group -Member $address
        }
    }
    $filter = "MemberOfGroup -eq '$($groupObject.DistinguishedName)'"
}
else {
    foreach ($address in $Mailbox) {
        $current = (Get-Mailbox -Identity $address).$CustomAttribute
        if ($current -eq $AttributeValue) { continue }
        if ($current) {
            throw "$address has $CustomAttribute = '$current' already: choose another -CustomAttribute."
        }
        if ($PSCmdlet.ShouldProcess($address, "Set-Mailbox -$CustomAttribute $AttributeValue")) {
            $mark = @{ Identity = $address; $CustomAttribute = $AttributeValue }
            Set-Mailbox @mark
        }
    }
    $filter = "$CustomAttribute -eq '$AttributeValue'"
}

$scope = Get-ManagementScope -Identity $ScopeName -ErrorAction SilentlyContinue
if ($scope) {
    if ($scope.RecipientFilter -ne $filter) {
        Write-Warning "Scope $ScopeName exists with filter [$($scope.RecipientFilter)], not [$filter]: left unchanged."
    }
}
elseif ($PSCmdlet.ShouldProcess($ScopeName, "New-ManagementScope -RecipientRestrictionFilter $filter")) {
    New-ManagementScope -Name $ScopeName -RecipientRestrictionFilter $filter | Out-Null
    Write-Host "Created management scope $ScopeName [$filter]"
}

# 3. The role assignments, within the scope ---------------------------------------------------------
$roles = @('Application Mail.Send')
if ($DraftMode) { $roles += 'Application Mail.ReadWrite' }

foreach ($role in $roles) {
    $assignments = @(Get-ManagementRoleAssignment -RoleAssignee $ObjectId -Role $role -ErrorAction SilentlyContinue)
    foreach ($other in $assignments | Where-Object { $_.CustomResourceScope -ne $ScopeName }) {
        Write-Warning "$($other.Name) grants $role with scope '$($other.CustomResourceScope)': a wider grant voids $ScopeName. Remove it: Remove-ManagementRoleAssignment '$($other.Name)'"
    }
    if ($assignments | Where-Object { $_.CustomResourceScope -eq $ScopeName }) {
        Write-Host "Already assigned: $role within $ScopeName"
    }
    elseif ($PSCmdlet.ShouldProcess($ObjectId, "New-ManagementRoleAssignment -Role '$role' -CustomResourceScope $ScopeName")) {
        $name = "$DisplayName $($role -replace '^Application ', '')"
        New-ManagementRoleAssignment -Name $name -App $ObjectId -Role $role -CustomResourceScope $ScopeName | Out-Null
        Write-Host "Assigned $role within $ScopeName"
    }
}

# 4. Verify: inside the scope, and outside it ------------------------------------------------------
if ($WhatIfPreference) { return }

$failed = $false
foreach ($address in $Mailbox) {
    $results = @(Test-ServicePrincipalAuthorization -Identity $ObjectId -Resource $address)
    foreach ($role in $roles) {
        $row = $results | Where-Object { $_.RoleName -eq $role }
        if (-not $row -or -not ($row | Where-Object { $_.InScope })) {
            Write-Warning "$address is NOT in scope for $role"
            $failed = $true
        }
    }
    $results | Format-Table RoleName, GrantedPermissions, AllowedResourceScope, InScope
}
if ($OutsideMailbox) {
    $outside = @(Test-ServicePrincipalAuthorization -Identity $ObjectId -Resource $OutsideMailbox)
    if ($outside | Where-Object { $_.InScope }) {
        Write-Warning "$OutsideMailbox is in scope: the gateway could send as it. Check the scope filter and other assignments."
        $failed = $true
    }
    $outside | Format-Table RoleName, AllowedResourceScope, InScope
}

Write-Host @"
Graph takes 30 minutes to 2 hours to apply Exchange RBAC changes: a 403 ErrorAccessDenied before then
is expected (replay the message later). Test-ServicePrincipalAuthorization ignores Entra ID grants, so
also check that Entra holds no Microsoft Graph Mail.Send for this identity:
  az rest --method GET --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$ObjectId/appRoleAssignments"
Set MAILGW_ALLOWED_SENDERS to the same mailboxes: $($Mailbox -join ',')
"@

if ($failed) { exit 1 }
