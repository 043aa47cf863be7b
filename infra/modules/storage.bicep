// The storage account of the host and of the gateway: identity-only (no shared keys), TLS 1.2,
// HTTPS only, no public blob access. It holds the outbound queue and its poison queue, the state
// table, the payload container (with a lifecycle rule as a retention backstop) and the container
// the Flex Consumption plan deploys the app package from.

@description('Region of the account.')
param location string

@description('Tags of the account.')
param tags object

@minLength(3)
@maxLength(24)
@description('Globally unique account name: 3-24 lowercase letters and digits.')
param name string

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
@description('Replication of the account (main.bicep: storageSku; LRS works in every region).')
param skuName string = 'Standard_LRS'

@description('Queues to create: the outbound queue and its <queue>-poison twin.')
param queueNames array

@description('Table of message states and idempotency records.')
param stateTableName string

@description('Container of claim-checked payloads.')
param payloadContainerName string

@description('Container of message templates (no lifecycle rule: templates are kept until replaced).')
param templateContainerName string

@description('Container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@minValue(1)
@description('MAILGW_RETENTION_DAYS: how long the gateway keeps a message state and its payload.')
param payloadRetentionDays int

// The gateway deletes a payload with its state record (daily clean-up, 03:30 UTC). The lifecycle
// rule is only a backstop for payloads whose record is gone (clean-up failed, record purged by
// hand), so it must never win the race: it waits at least as long as a message can legitimately
// need its payload (retention, or a sendAt up to 7 days ahead plus a day of retries), plus two
// days for the once-a-day schedules of both clean-ups.
var payloadDeleteAfterDays = max(payloadRetentionDays, 8) + 2

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches storage over its public endpoint, and the 'AzureServices' bypass does not cover Functions. Every request still needs an Entra token (shared keys are off). Add VNet integration and private endpoints to deny by default.
    // checkov:skip=CKV_AZURE_59: same cause as CKV_AZURE_35: without VNet integration the Function App has no private path to the account.
    // checkov:skip=CKV_AZURE_206: replication is the storageSku parameter. Its default, LRS, is the one SKU every Flex Consumption region offers; choose ZRS where the region has zones. GRS/GZRS replicate asynchronously, so a regional failover could lose the newest queue messages anyway, and the Function App is regional.
    accessTier: 'Hot'
    // No account keys, no SAS signed with them: every request carries an Entra token.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // A payload deleted by mistake (or by a purge) can be restored for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource payloadContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: payloadContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource templateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: templateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: stateTableName
}

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-mail-payloads'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${payloadContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: payloadDeleteAfterDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    payloadContainer
  ]
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output payloadDeleteAfterDays int = payloadDeleteAfterDays
