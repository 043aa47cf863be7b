// The Function App on the Flex Consumption plan (FC1, Linux, Python). Identity-based host
// storage, identity-based deployment storage, Entra-authenticated Application Insights.

@description('Region of the plan and the app.')
param location string

@description('Tags of the plan and the app.')
param tags object

@description('Function App name (its host name is <name>.azurewebsites.net).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('The storage account of the host, the gateway and the deployment package.')
param storageAccountName string

@description('Blob container the app package is deployed to.')
param deploymentContainerName string

@description('The Application Insights component.')
param appInsightsName string

@description('Python version of the runtime: 3.11 or 3.12 (main.bicep\'s pythonVersionType says why).')
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 10

@minValue(0)
@description('Always-ready instances for the HTTP group and for the delivery function (0: none).')
param alwaysReadyInstances int = 0

@description('Spread instances across availability zones (the region must have zones; billed as at least two always-ready instances per function group).')
param zoneRedundant bool = false

@description('The gateway settings (MAILGW_*, AZURE_CLIENT_ID) as name/value pairs; host plumbing is added here.')
param appSettings array

// Python on Functions runtime 4.x, the only runtime of the Flex Consumption plan. host.json's
// extension bundle [4.*, 5.0.0) is the one Flex requires.
var runtimeName = 'python'

// The queue-triggered delivery function (functions/delivery.py). Per-function scaling gives it its
// own instances, so it needs its own always-ready entry besides the HTTP group.
var deliveryFunctionName = 'deliver'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// Identity-based AzureWebJobsStorage: the host and the gateway's own storage clients
// (mailgw/storage.py) read these same settings. No connection string, no account key.
var hostSettings = [
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: account.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: account.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: account.properties.primaryEndpoints.table
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  // The connection string only locates the component; with local auth disabled, ingestion needs the
  // identity's Entra token, which the authentication string tells the host to use.
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  // host.json "telemetryMode": "OpenTelemetry": the host and the app's own OpenTelemetry
  // (mailgw/telemetry.py, docs/telemetry.md) both export; with this the worker continues the
  // host's trace context and sends the app's logs itself (the host no longer duplicates them).
  {
    name: 'PYTHON_ENABLE_OPENTELEMETRY'
    value: 'true'
  }
]

var alwaysReady = (alwaysReadyInstances > 0) ? [
  {
    name: 'http'
    instanceCount: alwaysReadyInstances
  }
  {
    name: 'function:${deliveryFunctionName}'
    instanceCount: alwaysReadyInstances
  }
] : []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter, off by default: on Flex Consumption it keeps at least two always-ready instances per function group (four groups here) billed around the clock. Queued mail waits safely in storage while instances are replaced.
    // Linux.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd deploys the `api` service of azure.yaml to the resource carrying this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_222: the HTTP API is public by design: callers anywhere in the organisation authenticate with Functions keys (or Entra tokens). Front it with API Management or a private endpoint if all callers are in a VNet.
    // checkov:skip=CKV_AZURE_17: callers authenticate with Functions keys or Entra bearer tokens; requiring client certificates would lock out every caller without one, and 'Optional' would check nothing.
    // checkov:skip=CKV_AZURE_212: a minimum instance count is an App Service plan setting; Flex Consumption adds instances on demand, and warm capacity is the alwaysReadyInstances parameter (zone spreading: zoneRedundant).
    // checkov:skip=CKV_AZURE_213: App Service health check evicts instances whose probe fails, and /api/v1/health fails when the shared storage is unreachable, which would evict every instance at once for a fault no instance has. Watch /api/v1/health with an availability test instead (docs/deploy.md).
    serverFarmId: plan.id
    httpsOnly: true
    // Key Vault references in the app settings (MAILGW_RELAY_CLIENT_CERT) are resolved with this
    // identity; without it the platform would use a system-assigned identity, which the app has not.
    keyVaultReferenceIdentity: identityId
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${account.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReady
      }
      runtime: {
        name: runtimeName
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // On Flex Consumption, FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are not app
      // settings: functionAppConfig.runtime above replaces them.
      appSettings: concat(appSettings, hostSettings)
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
