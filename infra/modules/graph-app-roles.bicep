// Optional and NOT recommended: grants the identity Microsoft Graph application permissions in
// Entra ID (app role assignments on the Microsoft Graph service principal). Such a grant has no
// mailbox scope: the identity could send as any mailbox in the tenant. Prefer Exchange RBAC for
// Applications (scripts/grant-exchange-rbac.ps1) and never combine the two: Exchange adds an Entra
// grant to the RBAC grants, so the RBAC scope would no longer limit anything
// (docs/graph-permissions.md, sections 3-5). Deployed only when main.bicep's
// grantGraphMailSendInEntra is true.
extension microsoftGraphV1

@description('Service principal (object) id of the identity that receives the app roles.')
param principalId string

@description('Microsoft Graph app role ids to grant: Mail.Send, plus Mail.ReadWrite in draft mode.')
param appRoleIds array

// Microsoft Graph's application id, the same in every tenant and every cloud.
var graphAppId = '00000003-0000-0000-c000-000000000000'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for appRoleId in appRoleIds: {
  principalId: principalId
  resourceId: graph.id
  appRoleId: appRoleId
}]
