// Optional read access to the relay transport's TLS client certificate in an existing Key Vault of
// the resource group, so that the Key Vault reference MAILGW_RELAY_CLIENT_CERT resolves (main.bicep
// deploys this module only when relayClientCertKeyVaultName is set; docs/transports.md). The vault
// must use the Azure RBAC permission model: with access policies, a role assignment grants nothing.
// tests/infra checks the GUID against its table of built-in roles.

@description('Name of the existing Key Vault, in this resource group, that holds the certificate.')
param keyVaultName string

@description('Principal (object) id of the Function App user-assigned identity.')
param identityPrincipalId string

var roles = {
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Key Vault Secrets User: the platform resolves the Key Vault reference MAILGW_RELAY_CLIENT_CERT
// with this identity (the site's keyVaultReferenceIdentity) by reading the certificate's secret,
// which holds the certificate with its private key. Read only; the role reads every secret of the
// vault, so keep the certificate in a vault of its own.
resource identitySecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identityPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: read the relay client certificate (Key Vault reference)'
  }
}
