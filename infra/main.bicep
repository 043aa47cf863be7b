// mailgw: the whole gateway in one resource group. Deployed by `azd up` (azure.yaml) or by
// `az deployment group create -g <rg> -f infra/main.bicep -p ...` (docs/deploy.md).
//
// What it creates: a user-assigned managed identity, a storage account with no shared keys (queue,
// poison queue, state table, payload container with a lifecycle backstop, deployment container),
// Log Analytics + Application Insights with local auth disabled, the role assignments the identity
// needs, and a Function App on the Flex Consumption plan (Linux, Python 3.11 or 3.12) whose app settings are
// every setting the gateway reads. Optional: a tenant-wide Mail.Send grant in Entra ID (off: Exchange
// RBAC for Applications is the recommended way, docs/graph-permissions.md) and the app registration
// for cross-tenant sending, the app registration of the HTTP API for Entra ID tokens
// (apiAuth=entra, docs/authentication.md), and, for the relay transport, a Key Vault reference to
// the TLS client certificate with read access to its vault (docs/transports.md). For the operator:
// an Azure Monitor workbook and alerts on failed messages, the -poison-poison queue, a stuck queue
// and storage availability (docs/operations.md). No key,
// connection string with a key, or client secret exists anywhere; the relay certificate stays in
// Key Vault and only its URI is a parameter.
targetScope = 'resourceGroup'

metadata description = 'mailgw: a serverless Microsoft 365 mail gateway on Azure Functions Flex Consumption'

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

@description('MAILGW_GRAPH_MODE: sendmail (Mail.Send, one request per message) or draft (Mail.Send + Mail.ReadWrite, exactly once, attachments up to 150 MB).')
type graphModeType = 'sendmail' | 'draft'

@description('MAILGW_TRANSPORT in Azure: Microsoft Graph, SMTP AUTH with XOAUTH2, or a relay connector (the outbox transport is for local use only).')
type transportType = 'graph' | 'smtp' | 'relay'

@description('Python versions the gateway runs on: pyproject.toml requires-python (>=3.11,<3.13). Flex Consumption also offers 3.10 and 3.13, which the gateway does not support (azure-functions 1.x requires Python < 3.13).')
type pythonVersionType = '3.11' | '3.12'

@description('Flex Consumption instance sizes, in MB.')
type instanceMemoryType = 512 | 2048 | 4096

@description('Replication of the storage account that holds the queue, the state table and the payloads.')
type storageSkuType = 'Standard_LRS' | 'Standard_ZRS' | 'Standard_GRS' | 'Standard_GZRS'

@description('The kind of principal an operator role assignment is for.')
type principalTypeType = 'User' | 'Group' | 'ServicePrincipal'

@description('MAILGW_AUTH: how HTTP callers authenticate: Functions keys (checked by the Functions host) or Entra ID access tokens (checked by the app).')
type apiAuthType = 'keys' | 'entra'

// ---------------------------------------------------------------------------------------------
// Parameters: deployment
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Environment name (azd: AZURE_ENV_NAME). Part of the hash that makes resource names unique, and a tag.')
param environmentName string

@description('Region of every resource. It must offer the Flex Consumption plan: az functionapp list-flexconsumption-locations.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Tags added to every resource.')
param tags object = {}

@description('Python of the Function App (azd: MAILGW_PYTHON_VERSION). 3.11 (default) is the version CI tests; 3.12 is supported too. Flex Consumption itself defaults to 3.12 and offers 3.10 to 3.13, but the gateway runs on 3.11 and 3.12 only.')
param pythonVersion pythonVersionType = '3.11'

@description('Memory of each Flex Consumption instance in MB. 2048 fits 150 MB attachments comfortably; 512 is cheaper for small mail.')
param instanceMemoryMB instanceMemoryType = 2048

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to. Graph allows 4 concurrent requests per mailbox in total, so more instances only help when mail comes from many mailboxes.')
param maximumInstanceCount int = 10

@minValue(0)
@maxValue(10)
@description('Always-ready instances for the HTTP functions and for the delivery function each (0 = scale to zero). 1 removes the cold start of the first message after an idle period, at a baseline cost.')
param alwaysReadyInstances int = 0

@description('Zone-redundant Flex Consumption plan: instances spread across availability zones. Costly: the platform then keeps at least two always-ready instances per function group (HTTP, delivery, poison recorder, clean-up timer).')
param zoneRedundant bool = false

@description('Storage replication (azd: AZURE_STORAGE_SKU). Standard_LRS (default) works in every region. Standard_ZRS survives the loss of a zone, but only regions with availability zones offer it, and several Flex Consumption regions have none (westus, northcentralus, ukwest, ...), where a ZRS account fails to deploy.')
param storageSku storageSkuType = 'Standard_LRS'

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps logs and Application Insights telemetry.')
param logRetentionDays int = 30

@description('Object id of a person or group who operates the gateway with the mailgw CLI (failed list/replay/purge, store cleanup): gets data access to the queues and the table of the account, and to the payload container (no other blob). Empty: nobody. azd passes the signed-in user (AZURE_PRINCIPAL_ID).')
param operatorPrincipalId string = ''

@description('Kind of operatorPrincipalId.')
param operatorPrincipalType principalTypeType = 'User'

// ---------------------------------------------------------------------------------------------
// Parameters: what the operator sees (workbook and alerts; docs/operations.md)
// ---------------------------------------------------------------------------------------------

@description('Email address that receives the alerts (failed messages, -poison-poison, a stuck queue, storage availability): creates an action group with it. Empty (default): no action group is created; the alerts still fire and show in Azure Monitor > Alerts.')
param alertEmail string = ''

@description('Resource id of an existing action group the alerts notify as well (/subscriptions/.../providers/Microsoft.Insights/actionGroups/<name>): Teams, SMS, on-call tools. Empty: none.')
param alertActionGroupId string = ''

@minValue(1)
@description('The delivery alert fires when the oldest visible message of the outbound queue has waited longer than this many minutes (scheduled and backing-off messages are invisible and do not count).')
param oldestMessageAlertMinutes int = 15

// ---------------------------------------------------------------------------------------------
// Parameters: the gateway's own settings (app settings of the same name; defaults are mailgw's)
// ---------------------------------------------------------------------------------------------

@minLength(3)
@description('MAILGW_ALLOWED_SENDERS (required): comma list of mailboxes and *@domain patterns the gateway may send as. Use the same mailboxes as the Exchange RBAC scope.')
param allowedSenders string

@description('MAILGW_TRANSPORT: graph (default; permissions: docs/graph-permissions.md), smtp (SMTP AUTH with XOAUTH2 to smtp.office365.com:587 with the identity token), or relay (an inbound connector on <domain>.mail.protection.outlook.com:25; needs relayHost, a fixed outbound IP through VNet integration and a NAT gateway, which this template does not create: docs/transports.md).')
param transport transportType = 'graph'

@description('MAILGW_RELAY_HOST: the relay connector host (<domain>.mail.protection.outlook.com); only used, and then required, with transport=relay.')
param relayHost string = ''

@description('MAILGW_RELAY_CLIENT_CERT (transport=relay; optional): the URI of the Key Vault secret that holds the TLS client certificate the gateway presents to a certificate-based inbound connector, https://<vault>.<Key Vault DNS suffix>/secrets/<certificate name>/ (a Key Vault certificate\'s secret: the certificate with its chain and private key, base64 PKCS#12 or PEM). The app setting is then a Key Vault reference to it, which the platform resolves with the identity (keyVaultReferenceIdentity): the certificate itself never passes through the deployment. Leave the version out, so that a renewed certificate is picked up: the platform fetches references again within 24 hours and after any configuration change, and the app reads the setting when it starts. Empty (default): no client certificate, and the connector must recognise the gateway by IP address. docs/transports.md.')
param relayClientCertUri string = ''

@description('Optional, with relayClientCertUri: the name of the existing Key Vault in this resource group (Azure RBAC permission model) that holds the relay certificate. Set: the identity is granted Key Vault Secrets User on that vault, so that the reference resolves; the role reads every secret of the vault, so keep the certificate in a vault of its own. Empty (default): grant it yourself (docs/transports.md).')
param relayClientCertKeyVaultName string = ''

@minLength(3)
@maxLength(56)
@description('MAILGW_QUEUE: the outbound queue. Its poison queue is <queue>-poison, as the Functions host names it; both are created here.')
param queueName string = 'mail-outbound'

@minLength(3)
@maxLength(63)
@description('MAILGW_STATE_TABLE: table of message states and idempotency keys (letters and digits, starting with a letter).')
param stateTableName string = 'mailgwstate'

@minLength(3)
@maxLength(63)
@description('MAILGW_PAYLOAD_CONTAINER: blob container of claim-checked payloads over the 64 KiB queue limit.')
param payloadContainerName string = 'mail-payloads'

@minLength(3)
@maxLength(63)
@description('MAILGW_TEMPLATE_CONTAINER: blob container of message templates (mailgw templates put); each version is a blob of its own.')
param templateContainerName string = 'mail-templates'

@description('MAILGW_GRAPH_ENDPOINT: Microsoft Graph root. Sovereign clouds: https://graph.microsoft.us, https://dod-graph.microsoft.us, https://microsoftgraph.chinacloudapi.cn.')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('MAILGW_GRAPH_SCOPE: scope of the identity\'s Graph tokens. Empty (default): Graph\'s own audience in the cloud of graphEndpoint, and https://graph.microsoft.com/.default when graphEndpoint is another host (an egress proxy). Set it only when the host in between wants tokens of its own.')
param graphScope string = ''

@description('MAILGW_GRAPH_MODE: sendmail needs Mail.Send; draft (exactly once, up to 150 MB) also needs Mail.ReadWrite.')
param graphMode graphModeType = 'sendmail'

@minValue(1)
@description('MAILGW_GRAPH_TIMEOUT_SECONDS: timeout of every Graph request.')
param graphTimeoutSeconds int = 30

@minValue(1)
@description('MAILGW_GRAPH_SUBMIT_GRACE_SECONDS: draft mode: after a /send whose answer was lost (a timeout, a 5xx, a crash), how long a draft that still reads as a draft, or is not found, counts as being sent before the gateway concludes it was not (and sends it).')
param graphSubmitGraceSeconds int = 300

@minValue(1)
@maxValue(4)
@description('MAILGW_MAILBOX_CONCURRENCY: Graph requests in flight per mailbox per instance (Graph allows 4).')
param mailboxConcurrency int = 4

@minValue(1)
@description('MAILGW_RETENTION_DAYS: days a message state (and its kept payload) is kept after acceptance. The payload lifecycle rule deletes blobs a little later, as a backstop.')
param retentionDays int = 30

@minValue(1)
@description('MAILGW_IDEMPOTENCY_HOURS: hours an Idempotency-Key keeps answering with its first message.')
param idempotencyHours int = 24

@minValue(1)
@description('MAILGW_MAX_REQUEST_BYTES: largest accepted HTTP body (the Functions host allows 100 MiB).')
param maxRequestBytes int = 104857600

@minValue(1)
@description('MAILGW_MAX_ATTACHMENT_BYTES: largest total of decoded attachments (Graph allows 150 MiB).')
param maxAttachmentBytes int = 157286400

@minValue(1)
@description('MAILGW_MAX_ATTEMPTS: delivery attempts for transient failures before a message is poisoned.')
param maxAttempts int = 8

@minValue(1)
@description('MAILGW_MAX_AGE_SECONDS: a message still failing this long after acceptance is poisoned.')
param maxAgeSeconds int = 86400

// ---------------------------------------------------------------------------------------------
// Parameters: outcome events (optional; docs/events.md)
// ---------------------------------------------------------------------------------------------

@description('MAILGW_EVENTS_QUEUE: a queue of the storage account that receives one outcome event per message (Base64 CloudEvents JSON; a queue-triggered function subscribes without settings). Created here. Empty (default): none.')
param eventsQueueName string = ''

@description('Create an Event Grid custom topic for the outcome events (CloudEvents 1.0, local auth disabled) and set MAILGW_EVENTGRID_ENDPOINT to it; the identity gets EventGrid Data Sender on it. Subscribe Functions, Logic Apps and webhooks to it: docs/events.md.')
param eventGridTopic bool = false

@description('With eventGridTopic: a queue of the storage account (created here) that a subscription of the topic delivers every event to, as the topic\'s own identity. Empty (default): no subscription.')
param eventGridSubscriptionQueueName string = ''

// ---------------------------------------------------------------------------------------------
// Parameters: Microsoft Graph permissions (optional; see docs/graph-permissions.md)
// ---------------------------------------------------------------------------------------------

@description('Grant the identity Mail.Send (and Mail.ReadWrite in draft mode) in Entra ID, tenant-wide. Off by default: prefer Exchange RBAC for Applications (scripts/grant-exchange-rbac.ps1), which can be scoped to your sender mailboxes. Never combine both: Exchange adds an Entra grant to the RBAC grants, which voids the scope. Needs a deployer who may grant app roles (Privileged Role Administrator or AppRoleAssignment.ReadWrite.All). Ignored in cross-tenant mode.')
param grantGraphMailSendInEntra bool = false

@description('Cross-tenant sending: the id of the tenant that owns the mailboxes. Empty (default): the mailboxes are in this tenant and the identity calls Graph directly. Set: an app registration (multitenant) is created here with the identity as its federated credential, and MAILGW_CREDENTIAL=federated_managed_identity. The mail tenant admin then creates its service principal there (docs/deploy.md).')
param mailTenantId string = ''

@description('Unique name (and display name) of the cross-tenant app registration.')
param crossTenantAppName string = 'mailgw-${environmentName}-sender'

// ---------------------------------------------------------------------------------------------
// Parameters: authentication of the HTTP API (docs/authentication.md)
// ---------------------------------------------------------------------------------------------

@description('MAILGW_AUTH: keys (default): callers send a Functions key, the Functions host checks it, and replay needs the admin key. entra: callers send an Entra ID v2 access token (Authorization: Bearer) with an app role (Messages.Send, Messages.Read, Messages.Replay); the routes are then anonymous to the Functions host (keys are no longer checked) and the app validates the token on every route but GET /api/v1/health. entra needs apiAudience, or createApiApp=true.')
param apiAuth apiAuthType = 'keys'

@description('MAILGW_API_TENANT_ID (apiAuth=entra): the tenant whose access tokens the API accepts. Default: the tenant of this deployment.')
param apiTenantId string = tenant().tenantId

@description('MAILGW_API_AUDIENCE (apiAuth=entra; required then, unless createApiApp=true): comma list of accepted aud values, i.e. the application (client) id of the gateway API app registration (a v2 token carries the client id as aud). A deployment with apiAuth=entra and neither this nor createApiApp stops with an error naming this parameter. Set: wins over the app that createApiApp creates.')
param apiAudience string = ''

@description('MAILGW_API_AUTHORITY (apiAuth=entra): the Entra ID sign-in endpoint; the app reads <authority>/<tenant>/v2.0/.well-known/openid-configuration for the issuer and the signing keys. Default: this cloud\'s (environment().authentication.loginEndpoint; the trailing slash is ignored).')
param apiAuthority string = environment().authentication.loginEndpoint

@description('Create the gateway API app registration (its three app roles, v2 tokens) and its service principal, and use its client id as MAILGW_API_AUDIENCE unless apiAudience is set. Off by default: docs/authentication.md creates it with the az CLI. Needs a deployer who may create app registrations (Application Administrator, or Application.ReadWrite.All).')
param createApiApp bool = false

@description('Unique name (and display name) of the API app registration that createApiApp creates.')
param apiAppName string = 'mailgw-${environmentName}-api'

// ---------------------------------------------------------------------------------------------
// Parameters: the SMTP intake (optional; docs/smtp-intake.md)
// ---------------------------------------------------------------------------------------------

@description('Deploy the SMTP intake (mailgw-smtp) on Azure Container Apps with TCP ingress on 587 (STARTTLS) and 465 (implicit TLS), for apps and devices that only speak SMTP. Needs smtpIntakeImage and smtpIntakeCertificateSecretUri.')
param smtpIntake bool = false

@description('The mailgw-smtp image (built from the Dockerfile at the root), e.g. myregistry.azurecr.io/mailgw-smtp:1.0.')
param smtpIntakeImage string = ''

@description('Login server of the private registry of smtpIntakeImage, pulled with the identity (grant it AcrPull yourself). Empty: a public image.')
param smtpIntakeRegistryServer string = ''

@description('URI of the Key Vault secret of the intake\'s TLS certificate (a Key Vault certificate with content type application/x-pem-file), https://<vault>.<Key Vault DNS suffix>/secrets/<name>.')
param smtpIntakeCertificateSecretUri string = ''

@description('Optional, with smtpIntake: the existing Key Vault of this resource group (Azure RBAC permission model) that holds the certificate; the identity is granted Key Vault Secrets User on it. Empty: grant it yourself.')
param smtpIntakeKeyVaultName string = ''

@minValue(1)
@maxValue(30)
@description('Most replicas of the SMTP intake.')
param smtpIntakeMaxReplicas int = 3

// ---------------------------------------------------------------------------------------------
// Names and shared values
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var allTags = union(tags, {
  'azd-env-name': environmentName
  application: 'mailgw'
})
var functionAppName = 'func-mailgw-${resourceToken}'
var storageAccountName = 'stmailgw${resourceToken}'
var deploymentContainerName = 'app-package'
var workbookDisplayName = 'mailgw operations (${environmentName})'
var crossTenant = !empty(mailTenantId)

// Microsoft Graph application permissions (app role ids are the same in every tenant).
var graphAppRoles = {
  mailSend: 'b633e1c5-b582-4048-a93e-9f11b44c7e96'
  mailReadWrite: 'e2a3a72e-5f79-4c64-b1b1-878b674786c9'
}
var graphAppRoleIds = (graphMode == 'draft') ? [graphAppRoles.mailSend, graphAppRoles.mailReadWrite] : [graphAppRoles.mailSend]

// The audience of the token exchange follows the cloud of MAILGW_GRAPH_ENDPOINT, as mailgw/identity.py does.
var tokenExchangeAudiences = {
  'graph.microsoft.us': 'api://AzureADTokenExchangeUSGov'
  'dod-graph.microsoft.us': 'api://AzureADTokenExchangeUSGov'
  'microsoftgraph.chinacloudapi.cn': 'api://AzureADTokenExchangeChina'
}
var graphHost = toLower(split(graphEndpoint, '/')[2])
var tokenExchangeAudience = contains(tokenExchangeAudiences, graphHost) ? tokenExchangeAudiences[graphHost] : 'api://AzureADTokenExchange'

// ---------------------------------------------------------------------------------------------
// Identity, monitoring, storage, role assignments
// ---------------------------------------------------------------------------------------------

// One user-assigned identity for everything: storage (host and app), the deployment package,
// Application Insights, and Microsoft Graph. User-assigned because only a user-assigned identity
// can be the federated credential of an app registration (cross-tenant mode), and because its ids
// exist before the Function App, so Exchange RBAC can be prepared in parallel.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-mailgw-${resourceToken}'
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: allTags
    workspaceName: 'log-mailgw-${resourceToken}'
    appInsightsName: 'appi-mailgw-${resourceToken}'
    retentionInDays: logRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: allTags
    name: storageAccountName
    skuName: storageSku
    queueNames: concat([
      queueName
      '${queueName}-poison'
    ], empty(eventsQueueName) ? [] : [
      eventsQueueName
    ], (eventGridTopic && !empty(eventGridSubscriptionQueueName)) ? [
      eventGridSubscriptionQueueName
    ] : [])
    stateTableName: stateTableName
    payloadContainerName: payloadContainerName
    templateContainerName: templateContainerName
    deploymentContainerName: deploymentContainerName
    payloadRetentionDays: retentionDays
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  params: {
    storageAccountName: storage.outputs.name
    payloadContainerName: payloadContainerName
    templateContainerName: templateContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    identityPrincipalId: identity.properties.principalId
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

// Optional: read access to the relay client certificate in an existing Key Vault of this resource
// group, for the Key Vault reference MAILGW_RELAY_CLIENT_CERT (docs/transports.md). Only when that
// setting exists: a vault name alone grants nothing. (Each operand in parentheses: pycep-parser,
// which `make test` uses to check this file, binds `!` looser than `&&`.)
module relayCertAccess 'modules/key-vault-access.bicep' = if ((transport == 'relay') && (!empty(relayClientCertUri)) && (!empty(relayClientCertKeyVaultName))) {
  name: 'relay-cert-access'
  params: {
    keyVaultName: relayClientCertKeyVaultName
    identityPrincipalId: identity.properties.principalId
  }
}

// Optional: the Event Grid topic of the outcome events, its role assignment, its subscription.
module events 'modules/events.bicep' = if (eventGridTopic) {
  name: 'events'
  params: {
    location: location
    tags: allTags
    name: 'evgt-mailgw-${resourceToken}'
    identityPrincipalId: identity.properties.principalId
    storageAccountName: storage.outputs.name
    subscriptionQueueName: eventGridSubscriptionQueueName
  }
}

// ---------------------------------------------------------------------------------------------
// Microsoft Graph (optional): Entra grant, or the cross-tenant app registration
// ---------------------------------------------------------------------------------------------

module graphGrant 'modules/graph-app-roles.bicep' = if (grantGraphMailSendInEntra && !crossTenant) {
  name: 'graph-app-roles'
  params: {
    principalId: identity.properties.principalId
    appRoleIds: graphAppRoleIds
  }
}

module crossTenantApp 'modules/cross-tenant-app.bicep' = if (crossTenant) {
  name: 'cross-tenant-app'
  params: {
    uniqueName: crossTenantAppName
    identityPrincipalId: identity.properties.principalId
    tokenExchangeAudience: tokenExchangeAudience
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP API's app registration (optional; apiAuth=entra, docs/authentication.md)
// ---------------------------------------------------------------------------------------------

module apiApp 'modules/api-app.bicep' = if (createApiApp) {
  name: 'api-app'
  params: {
    uniqueName: apiAppName
  }
}

var apiAppClientId = (apiApp.?outputs.appId) ?? ''

// ---------------------------------------------------------------------------------------------
// The gateway's settings: every MAILGW_* setting the app reads (mailgw/settings.py,
// mailgw/identity.py). Host plumbing (AzureWebJobsStorage__*, Application Insights) is added by
// modules/function-app.bicep. tests/infra checks this list against the code.
// ---------------------------------------------------------------------------------------------

var gatewaySettings = [
  {
    name: 'MAILGW_TRANSPORT'
    value: transport
  }
  {
    name: 'MAILGW_QUEUE'
    value: queueName
  }
  {
    name: 'MAILGW_ALLOWED_SENDERS'
    value: allowedSenders
  }
  {
    name: 'MAILGW_GRAPH_ENDPOINT'
    value: graphEndpoint
  }
  {
    name: 'MAILGW_GRAPH_MODE'
    value: graphMode
  }
  {
    name: 'MAILGW_GRAPH_TIMEOUT_SECONDS'
    value: string(graphTimeoutSeconds)
  }
  {
    name: 'MAILGW_GRAPH_SUBMIT_GRACE_SECONDS'
    value: string(graphSubmitGraceSeconds)
  }
  {
    name: 'MAILGW_MAILBOX_CONCURRENCY'
    value: string(mailboxConcurrency)
  }
  {
    name: 'MAILGW_STATE_TABLE'
    value: stateTableName
  }
  {
    name: 'MAILGW_PAYLOAD_CONTAINER'
    value: payloadContainerName
  }
  {
    name: 'MAILGW_TEMPLATE_CONTAINER'
    value: templateContainerName
  }
  {
    name: 'MAILGW_RETENTION_DAYS'
    value: string(retentionDays)
  }
  {
    name: 'MAILGW_IDEMPOTENCY_HOURS'
    value: string(idempotencyHours)
  }
  {
    name: 'MAILGW_MAX_REQUEST_BYTES'
    value: string(maxRequestBytes)
  }
  {
    name: 'MAILGW_MAX_ATTACHMENT_BYTES'
    value: string(maxAttachmentBytes)
  }
  {
    name: 'MAILGW_MAX_ATTEMPTS'
    value: string(maxAttempts)
  }
  {
    name: 'MAILGW_MAX_AGE_SECONDS'
    value: string(maxAgeSeconds)
  }
  {
    name: 'MAILGW_CREDENTIAL'
    value: crossTenant ? 'federated_managed_identity' : 'managed_identity'
  }
  // azure-identity picks the user-assigned identity by its client id.
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  // Outcome events to a storage queue (docs/events.md); empty leaves that sink off.
  {
    name: 'MAILGW_EVENTS_QUEUE'
    value: eventsQueueName
  }
]

// Only when given: empty leaves the app to derive Graph's audience from MAILGW_GRAPH_ENDPOINT.
var graphScopeSettings = empty(graphScope) ? [] : [
  {
    name: 'MAILGW_GRAPH_SCOPE'
    value: graphScope
  }
]

// Outcome events to the Event Grid topic, when there is one.
var eventGridSettings = eventGridTopic ? [
  {
    name: 'MAILGW_EVENTGRID_ENDPOINT'
    value: (events.?outputs.endpoint) ?? ''
  }
] : []

var crossTenantSettings = crossTenant ? [
  {
    name: 'MAILGW_TENANT_ID'
    value: mailTenantId
  }
  {
    name: 'MAILGW_APP_CLIENT_ID'
    value: (crossTenantApp.?outputs.appClientId) ?? ''
  }
] : []

// MAILGW_AUTH is always set, so the app setting shows which mode runs. The other three only mean
// something with entra and are set only then (keys mode keeps the app's defaults). Entra without an
// audience would deploy an app that refuses to start (mailgw/settings.py): the deployment stops
// earlier, with fail(), naming the parameter.
var apiAuthSettings = concat([
  {
    name: 'MAILGW_AUTH'
    value: apiAuth
  }
], (apiAuth == 'entra') ? [
  {
    name: 'MAILGW_API_TENANT_ID'
    value: apiTenantId
  }
  {
    name: 'MAILGW_API_AUDIENCE'
    value: empty(apiAudience) ? (createApiApp ? apiAppClientId : fail('apiAuth=entra needs apiAudience: the application (client) id of the gateway API app registration (docs/authentication.md), or createApiApp=true.')) : apiAudience
  }
  {
    name: 'MAILGW_API_AUTHORITY'
    value: apiAuthority
  }
] : [])

// MAILGW_RELAY_CLIENT_CERT is a Key Vault reference, never the certificate: the platform resolves it
// with the identity (function-app.bicep sets keyVaultReferenceIdentity) before the app reads it.
// A Key Vault certificate has three URIs; only its secret's (/secrets/) hands out the private key,
// and the deployment stops, naming the parameter, when another one is given.
var relaySettings = (transport == 'relay') ? concat([
  {
    name: 'MAILGW_RELAY_HOST'
    value: relayHost
  }
], empty(relayClientCertUri) ? [] : [
  {
    name: 'MAILGW_RELAY_CLIENT_CERT'
    value: contains(relayClientCertUri, '/secrets/') ? '@Microsoft.KeyVault(SecretUri=${relayClientCertUri})' : fail('relayClientCertUri must be the URI of the Key Vault secret that holds the certificate and its key, https://<vault>.<Key Vault DNS suffix>/secrets/<certificate name>/ (not its /certificates/ URI: a Key Vault reference reads secrets only): docs/transports.md.')
  }
]) : []

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    location: location
    tags: allTags
    name: functionAppName
    planName: 'plan-mailgw-${resourceToken}'
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    alwaysReadyInstances: alwaysReadyInstances
    zoneRedundant: zoneRedundant
    appSettings: concat(gatewaySettings, graphScopeSettings, apiAuthSettings, crossTenantSettings, relaySettings, eventGridSettings)
  }
  // The identity must hold its storage roles before the host starts and the first package lands,
  // and its Key Vault role (if granted here) before the platform resolves the certificate's
  // reference.
  dependsOn: [
    rbac
    relayCertAccess
    events
  ]
}

// ---------------------------------------------------------------------------------------------
// The SMTP intake (optional): the same identity, storage and settings as the Function App
// ---------------------------------------------------------------------------------------------

module smtpIntakeCertAccess 'modules/key-vault-access.bicep' = if (smtpIntake && (!empty(smtpIntakeKeyVaultName))) {
  name: 'smtp-intake-cert-access'
  params: {
    keyVaultName: smtpIntakeKeyVaultName
    identityPrincipalId: identity.properties.principalId
  }
}

// fail() sits in branches taken only with smtpIntake on (each operand in parentheses: pycep-parser
// binds `!` looser than `&&`).
module smtpIntakeApp 'modules/smtp-intake.bicep' = if (smtpIntake) {
  name: 'smtp-intake'
  params: {
    location: location
    tags: allTags
    name: 'ca-mailgw-smtp-${resourceToken}'
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    image: (smtpIntake && (empty(smtpIntakeImage))) ? fail('smtpIntake needs smtpIntakeImage: the mailgw-smtp image built from the Dockerfile (docs/smtp-intake.md).') : smtpIntakeImage
    registryServer: smtpIntakeRegistryServer
    certificateSecretUri: (smtpIntake && (!contains(smtpIntakeCertificateSecretUri, '/secrets/'))) ? fail('smtpIntake needs smtpIntakeCertificateSecretUri: the URI of the Key Vault secret of its certificate, https://<vault>.<Key Vault DNS suffix>/secrets/<name> (docs/smtp-intake.md).') : smtpIntakeCertificateSecretUri
    gatewaySettings: concat(gatewaySettings, graphScopeSettings, crossTenantSettings, eventGridSettings)
    maxReplicas: smtpIntakeMaxReplicas
  }
  dependsOn: [
    rbac
    smtpIntakeCertAccess
  ]
}

// ---------------------------------------------------------------------------------------------
// What the operator sees: the workbook and the alerts (docs/operations.md, docs/telemetry.md)
// ---------------------------------------------------------------------------------------------

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: allTags
    appInsightsName: monitoring.outputs.appInsightsName
    displayName: workbookDisplayName
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: allTags
    namePrefix: 'mailgw-${resourceToken}'
    appInsightsName: monitoring.outputs.appInsightsName
    storageAccountName: storage.outputs.name
    queueName: queueName
    alertEmail: alertEmail
    actionGroupId: alertActionGroupId
    oldestMessageMinutes: oldestMessageAlertMinutes
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores them in the environment: `azd env get-values`)
// ---------------------------------------------------------------------------------------------

@description('Base URL of the HTTP API: POST <url>/v1/messages.')
output FUNCTION_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
output FUNCTION_APP_NAME string = functionApp.outputs.name
output IDENTITY_CLIENT_ID string = identity.properties.clientId
@description('Service principal object id of the identity: the ObjectId for Exchange RBAC (New-ServicePrincipal, New-ManagementRoleAssignment -App).')
output IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
@description('The operator granted data access (operatorPrincipalId; azd: whoever ran it), empty when none: the azd postprovision hook proves with its roles that the deployment\'s role assignments have reached Storage.')
output OPERATOR_PRINCIPAL_ID string = operatorPrincipalId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
@description('Endpoints of the storage account (https://<account>.blob.<storage suffix>/ and its queue and table twins): the azd postprovision hook reads through them.')
output STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
@description('Display name of the operator\'s workbook: Application Insights > Workbooks, or Azure Monitor > Workbooks.')
output OPERATIONS_WORKBOOK string = workbookDisplayName
@description('Names of the alert rules (Azure Monitor > Alerts > Alert rules).')
output ALERT_RULES array = alerts.outputs.alertNames
@description('Client id of the cross-tenant app registration; empty when cross-tenant mode is off.')
output CROSS_TENANT_APP_CLIENT_ID string = (crossTenantApp.?outputs.appClientId) ?? ''
@description('Client id of the API app registration created by createApiApp (callers request tokens for <id>/.default); empty when it is not created.')
output API_APP_CLIENT_ID string = apiAppClientId
@description('Object id of that app\'s service principal: the resource of app role assignments (docs/authentication.md); empty when it is not created.')
output API_SERVICE_PRINCIPAL_ID string = (apiApp.?outputs.servicePrincipalId) ?? ''

// For the mailgw CLI after `eval "$(azd env get-values)"`: status/send use MAILGW_URL, the
// operator commands reach storage with these names and `az login`.
output MAILGW_URL string = 'https://${functionApp.outputs.defaultHostName}'
output AzureWebJobsStorage__accountName string = storage.outputs.name
output MAILGW_QUEUE string = queueName
output MAILGW_STATE_TABLE string = stateTableName
output MAILGW_PAYLOAD_CONTAINER string = payloadContainerName
@description('The outcome events queue (mailgw events tail reads it); empty when there is none.')
output MAILGW_EVENTS_QUEUE string = eventsQueueName
@description('The outcome events topic endpoint; empty when eventGridTopic is off.')
output EVENTGRID_TOPIC_ENDPOINT string = (events.?outputs.endpoint) ?? ''
@description('The SMTP intake\'s address (ports 587 STARTTLS and 465 implicit TLS); empty when smtpIntake is off.')
output SMTP_INTAKE_HOST string = (smtpIntakeApp.?outputs.fqdn) ?? ''
