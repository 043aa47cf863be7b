// The operator's Azure Monitor workbook: throughput, end-to-end latency percentiles, failures by
// code with their hints, top senders, queue depth and the oldest message's age, from the telemetry
// of docs/telemetry.md. Its content is workbook.json (the portal's Advanced Editor format: edit the
// workbook in the portal, copy the gallery template back into that file); tests/infra checks that
// every query names only what docs/telemetry.md lists. It opens from the Application Insights
// resource (Workbooks) or from Azure Monitor > Workbooks.

@description('Region of the workbook.')
param location string

@description('Tags of the workbook.')
param tags object

@description('The Application Insights component the queries read.')
param appInsightsName string

@description('Name shown in the workbook gallery.')
param displayName string

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource operationsWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID; this one is stable across redeployments.
  name: guid(appInsights.id, 'mailgw-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: appInsights.id
    version: 'Notebook/1.0'
    // Opened from the gallery without a resource in context (a link, a pin), the workbook queries
    // its fallback resource: this deployment's Application Insights.
    serializedData: string(union(loadJsonContent('workbook.json'), {
      fallbackResourceIds: [
        appInsights.id
      ]
    }))
  }
}
