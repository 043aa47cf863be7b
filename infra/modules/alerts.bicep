// The operator's alerts, each wired to the action groups given (an existing one, and/or one this
// module creates with an email receiver):
// - a message failed (the poison function ran) in the last 5 minutes;
// - something sits in <queue>-poison-poison: recording a failure itself failed;
// - the oldest visible message of the outbound queue is older than N minutes: delivery is stuck;
// - the storage account's availability dropped: nothing moves without it.
// The first three query the telemetry of docs/telemetry.md in Application Insights (log search
// alerts); tests/infra checks their queries against that contract. The last is a metric alert on
// the platform metric Availability. Without an action group the alerts still fire and show in
// Azure Monitor > Alerts, but notify nobody.

@description('Region of the log search alerts (metric alerts and action groups are global).')
param location string

@description('Tags of every resource.')
param tags object

@description('Prefix of the resource names, e.g. mailgw-<token>.')
param namePrefix string

@description('The Application Insights component the log search alerts query.')
param appInsightsName string

@description('The storage account whose availability is watched.')
param storageAccountName string

@description('MAILGW_QUEUE: the outbound queue; its poison twins are <queue>-poison and <queue>-poison-poison.')
param queueName string

@description('Email address to notify: creates an action group with it. Empty: none created.')
param alertEmail string = ''

@description('Resource id of an existing action group to notify as well (Teams, SMS, ITSM, ...). Empty: none.')
param actionGroupId string = ''

@minValue(1)
@description('The oldest-message alert fires when the oldest visible message of the outbound queue is older than this many minutes.')
param oldestMessageMinutes int = 15

@minValue(90)
@maxValue(100)
@description('The storage alert fires when the account\'s average availability over 15 minutes falls below this percentage.')
param storageAvailabilityPercent int = 99

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource emailGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'mailgw'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actionGroups = concat(empty(actionGroupId) ? [] : [
  actionGroupId
], empty(alertEmail) ? [] : [
  emailGroup.id
])

// One row per execution of the poison function: the host's own request (record_failure) or the
// span it emits (mailgw.record_failure), whichever the telemetry mode records. More than zero
// fires, so counting both is harmless. Requests are never sampled by the host; the distro samples
// nothing by default (docs/telemetry.md).
var failedQuery = 'requests | where name in ("record_failure", "mailgw.record_failure")'

// report_queues reports every queue's depth every minute; sweep_poison_poison drains
// <queue>-poison-poison every 5 minutes, so a depth seen in the last 15 minutes is real.
var poisonPoisonQuery = 'customMetrics | where name == "mailgw.queue.depth" and tostring(customDimensions.queue) == "${queueName}-poison-poison" | project timestamp, depth = value'

var oldestQuery = 'customMetrics | where name == "mailgw.queue.oldest_age" and tostring(customDimensions.queue) == "${queueName}" | project timestamp, age_seconds = value'

resource failedMessages 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-failed-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'mailgw: a message failed'
    description: 'A message failed in the last 5 minutes. Run `mailgw failed list`, fix what its hint says, then `mailgw failed replay <id>` (docs/operations.md).'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: failedQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    // A new Application Insights has no rows yet, and Azure may refuse to create a rule whose query
    // it cannot validate against data; tests/infra checks the query against docs/telemetry.md.
    skipQueryValidation: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

resource poisonPoison 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-poison-poison'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'mailgw: a failure could not be recorded'
    description: 'Messages reached ${queueName}-poison-poison: recording a failure failed even after the host\'s retries (storage trouble, or a bug). The sweeper records them every 5 minutes; if this persists, read the exceptions of record_failure and sweep_poison_poison in Application Insights (docs/operations.md).'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: poisonPoisonQuery
          metricMeasureColumn: 'depth'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    // A new Application Insights has no rows yet, and Azure may refuse to create a rule whose query
    // it cannot validate against data; tests/infra checks the query against docs/telemetry.md.
    skipQueryValidation: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

resource oldestMessage 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-oldest-message'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'mailgw: delivery is falling behind'
    description: 'The oldest visible message in ${queueName} has waited more than ${oldestMessageMinutes} minutes (scheduled and backing-off messages are invisible and do not count): the delivery function is not keeping up or not running. Check the workbook\'s queue charts and the Function App\'s health (docs/operations.md).'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: oldestQuery
          metricMeasureColumn: 'age_seconds'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: oldestMessageMinutes * 60
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    // A new Application Insights has no rows yet, and Azure may refuse to create a rule whose query
    // it cannot validate against data; tests/infra checks the query against docs/telemetry.md.
    skipQueryValidation: true
    actions: {
      actionGroups: actionGroups
    }
  }
}

resource storageAvailability 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-storage-availability'
  location: 'global'
  tags: tags
  properties: {
    description: 'The storage account that holds the queue, the message states and the payloads answered less than ${storageAvailabilityPercent}% of requests successfully over 15 minutes: intake answers 503 and delivery stalls until it recovers. See Azure Service Health and the account\'s Insights.'
    severity: 1
    enabled: true
    scopes: [
      account.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'availability'
          metricNamespace: 'Microsoft.Storage/storageAccounts'
          metricName: 'Availability'
          operator: 'LessThan'
          threshold: storageAvailabilityPercent
          timeAggregation: 'Average'
        }
      ]
    }
    autoMitigate: true
    actions: [for group in actionGroups: {
      actionGroupId: group
    }]
  }
}

@description('Names of the alert rules, for the docs and the operator.')
output alertNames array = [
  failedMessages.name
  poisonPoison.name
  oldestMessage.name
  storageAvailability.name
]
