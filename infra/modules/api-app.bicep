// Optional (apiAuth=entra with createApiApp=true): the app registration that represents the
// gateway's HTTP API in Entra ID, with the four app roles the gateway checks (mailgw/auth.py),
// v2 access tokens (their aud is this app's client id, which MAILGW_API_AUDIENCE names), and its
// service principal, on which callers are assigned roles. docs/authentication.md does the same with
// the az CLI, and adds what this module leaves out:
// - identifierUris (api://<appId>) cannot name the app's own id in the same deployment; callers
//   request tokens with the scope <appId>/.default, which needs no identifier URI;
// - a delegated scope pre-authorized for the Azure CLI, needed only for people who call the API with
//   `az account get-access-token`;
// - role assignments to the calling identities.
// Deployed only when main.bicep's createApiApp is true; needs a deployer who may create app
// registrations and service principals (for example an Application Administrator).
extension microsoftGraphV1

@description('Unique name (and display name) of the API app registration in this tenant.')
param uniqueName string

// The app roles of mailgw/auth.py (ROLE_SEND, ROLE_READ, ROLE_REPLAY, ROLE_READ_ALL). Each role's id is derived
// from the app's unique name and the role's value, so it is stable across redeployments (Entra ID
// refuses to change or drop an enabled role that is in use).
var roles = [
  {
    value: 'Messages.Send'
    displayName: 'Send mail through mailgw'
    description: 'Submit messages (POST /api/v1/messages) and read their status.'
  }
  {
    value: 'Messages.Read'
    displayName: 'Read mailgw message states'
    description: 'Read the state of the messages the calling app sent (GET /api/v1/messages/{id}).'
  }
  {
    value: 'Messages.ReadAll'
    displayName: 'Read any mailgw message (operators)'
    description: 'Read the state of any app\'s messages, and with Messages.Replay replay them.'
  }
  {
    value: 'Messages.Replay'
    displayName: 'Replay failed mailgw messages'
    description: 'Send a failed message again (POST /api/v1/messages/{id}/replay).'
  }
]

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: uniqueName
  description: 'The mailgw HTTP API: callers need one of its app roles (docs/authentication.md).'
  // Single tenant: the gateway accepts tokens of its own tenant only (MAILGW_API_TENANT_ID).
  signInAudience: 'AzureADMyOrg'
  api: {
    // v2 tokens: issuer <authority>/<tenant>/v2.0 and aud = this app's client id, the only form
    // the gateway accepts. Without it Entra ID issues v1 tokens (issuer sts.windows.net), which the
    // gateway refuses with a 401 naming this setting.
    requestedAccessTokenVersion: 2
  }
  appRoles: [for role in roles: {
    id: guid(uniqueName, role.value)
    value: role.value
    displayName: role.displayName
    description: role.description
    // Application: daemons and managed identities (client credentials). User: people and groups,
    // for delegated tokens.
    allowedMemberTypes: [
      'Application'
      'User'
    ]
    isEnabled: true
  }]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
  // Entra ID issues tokens for the API only to principals assigned one of its roles: an unassigned
  // caller fails when it requests the token (AADSTS501051 for an app, AADSTS50105 for a user)
  // instead of reaching the gateway and getting a 403.
  appRoleAssignmentRequired: true
}

@description('Application (client) id of the API: MAILGW_API_AUDIENCE, and the scope <appId>/.default of callers.')
output appId string = app.appId

@description('Object id of the API service principal: the resource of app role assignments (appRoleAssignedTo).')
output servicePrincipalId string = servicePrincipal.id
