// Outcome events (docs/events.md), optional: an Event Grid custom topic in the CloudEvents 1.0
// schema with local (key and SAS) authentication disabled, so the only way to publish is an Entra
// token of an identity with EventGrid Data Sender on the topic: the gateway's identity gets it here,
// by role GUID. Optional too: a subscription that delivers the topic's events to a storage queue of
// the gateway's account, signed in as the topic's own system-assigned identity (the account has no
// keys), which may only add messages to queues (Storage Queue Data Message Sender).

@description('Region of the topic.')
param location string

@description('Tags of the topic.')
param tags object

@minLength(3)
@maxLength(50)
@description('Name of the topic.')
param name string

@description('Principal (object) id of the gateway identity, which publishes the events.')
param identityPrincipalId string

@description('The gateway storage account (for the optional subscription).')
param storageAccountName string

@description('Queue of that account the topic delivers every event to; empty: no subscription.')
param subscriptionQueueName string = ''

var roles = {
  eventgridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}
var subscribe = !empty(subscriptionQueueName)

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    // checkov:skip=CKV_AZURE_193: Flex Consumption without VNet integration publishes over the public endpoint, as it reaches storage; local auth is off, so every publish still needs an Entra token with EventGrid Data Sender. Add VNet integration and a private endpoint to close it.
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

// EventGrid Data Sender, on this topic only: the gateway publishes, nothing more.
resource identityEventSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, identityPrincipalId, roles.eventgridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventgridDataSender)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: publish outcome events'
  }
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Storage Queue Data Message Sender for the topic's identity: it adds messages, reads none.
resource topicQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (subscribe) {
  name: guid(account.id, topic.id, roles.storageQueueDataMessageSender)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'mailgw: the events topic delivers to its storage queue subscription'
  }
}

resource queueSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (subscribe) {
  parent: topic
  name: 'storage-queue'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: account.id
          queueName: subscriptionQueueName
        }
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
  dependsOn: [
    topicQueueSender
  ]
}

@description('The topic endpoint: MAILGW_EVENTGRID_ENDPOINT.')
output endpoint string = topic.properties.endpoint
output name string = topic.name
