// Cross-tenant sending (MAILGW_CREDENTIAL=federated_managed_identity): a multitenant app
// registration in this (the identity's) tenant that trusts the Function App's user-assigned
// identity as a federated identity credential. The gateway exchanges the identity's token for a
// token of this app in the mail tenant: no secret or certificate exists. The mail tenant's admin
// then creates the app's service principal there (`az ad sp create --id <appId>`) and grants it
// Mail.Send with Exchange RBAC (docs/graph-permissions.md, section 7).
extension microsoftGraphV1

@description('Unique name (and display name) of the app registration in this tenant.')
param uniqueName string

@description('Principal (object) id of the user-assigned identity: the subject of the credential.')
param identityPrincipalId string

@description('Audience of the token exchange: api://AzureADTokenExchange, or its USGov/China variant.')
param tokenExchangeAudience string = 'api://AzureADTokenExchange'

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: uniqueName
  // Multitenant: its service principal must exist in the mail tenant. It needs no API permissions
  // of its own here; Exchange RBAC in the mail tenant grants what it may do.
  signInAudience: 'AzureADMultipleOrgs'
}

// Issuer: this tenant's authority (the identity's tenant), in the form Entra issues managed identity
// tokens. Subject: the identity's principal id (not its client id).
resource federatedCredential 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = {
  name: '${app.uniqueName}/mailgw-function-identity'
  description: 'The mailgw Function App user-assigned identity'
  audiences: [
    tokenExchangeAudience
  ]
  issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
  subject: identityPrincipalId
}

output appClientId string = app.appId
