// Role assignments, by built-in role definition id (the same GUID in every tenant), each at the
// narrowest scope that works: the payload container, the storage account, or the Application
// Insights component.
// tests/infra/test_infra.py checks every GUID against its table of built-in roles.

@description('The gateway storage account.')
param storageAccountName string

@description('The container of claim-checked payloads, the only one an operator may read.')
param payloadContainerName string

@description('The container of message templates, which an operator manages with the mailgw CLI.')
param templateContainerName string

@description('The Application Insights component.')
param appInsightsName string

@description('Principal (object) id of the Function App user-assigned identity.')
param identityPrincipalId string

@description('Object id of an operator of the mailgw CLI; empty: none.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Kind of operatorPrincipalId.')
param operatorPrincipalType string = 'User'

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource payloadContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: payloadContainerName
}

resource templateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: templateContainerName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Storage Blob Data Owner: the Functions host keeps its keys, timer-trigger schedule state and
// singleton/scale leases in AzureWebJobsStorage blobs (identity-based host storage needs Owner,
// not Contributor); the Flex Consumption plan reads the deployment package from its container with
// this identity; and the gateway writes, reads and deletes claim-checked payloads.
resource identityBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, roles.storageBlobDataOwner)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: host storage, deployment package, claim-checked payloads'
  }
}

// Storage Queue Data Contributor: intake sends to the outbound queue; the queue trigger reads,
// updates (visibility) and deletes messages; the host and the gateway move failures to
// <queue>-poison; delivery re-enqueues with a delay.
resource identityQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, roles.storageQueueDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: send, process and poison queue messages'
  }
}

// Storage Table Data Contributor: message states and idempotency records (MAILGW_STATE_TABLE).
resource identityTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, identityPrincipalId, roles.storageTableDataContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: message state and idempotency table'
  }
}

// Monitoring Metrics Publisher: Application Insights has local auth disabled, so telemetry is
// accepted only with an Entra token of a principal holding this role on the component.
resource identityMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: Entra-authenticated telemetry'
  }
}

var operator = !empty(operatorPrincipalId)
var operatorBlobRoles = operator ? [
  roles.storageBlobDataContributor
] : []
var operatorRoles = operator ? [
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
] : []

// Optional operator access for the mailgw CLI (failed list/replay/purge, store cleanup), which works
// on storage directly with `az login`. Storage Blob Data Contributor on the payload container only:
// the CLI reads and deletes kept payloads there and nowhere else, while the account also holds the
// deployment package and the Functions host's keys and leases, which an operator must not read or
// delete. Contributor, not Owner: an operator needs no ACL management.
resource operatorBlobAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in operatorBlobRoles: {
  name: guid(payloadContainer.id, operatorPrincipalId, roleId)
  scope: payloadContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'mailgw operator: mailgw CLI access to the kept payloads'
  }
}]

// Storage Blob Data Contributor on the template container: `mailgw templates put/list/show`.
resource operatorTemplateAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in operatorBlobRoles: {
  name: guid(templateContainer.id, operatorPrincipalId, roleId)
  scope: templateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'mailgw operator: mailgw CLI access to the message templates'
  }
}]

// Storage Queue Data Contributor and Storage Table Data Contributor on the account, for the same
// commands: read and replay the poison queue, read and delete state records.
resource operatorAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in operatorRoles: {
  name: guid(account.id, operatorPrincipalId, roleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'mailgw operator: mailgw CLI access to queue and state'
  }
}]
