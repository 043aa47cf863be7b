// The SMTP intake (mailgw-smtp, docs/smtp-intake.md) on Azure Container Apps: TCP ingress on 587
// (STARTTLS required before AUTH) and 465 (implicit TLS), the gateway's user-assigned identity and
// storage (the same queue, state table and payloads as the Function App), and the TLS certificate
// from Key Vault: a secret of the container app that references the certificate's secret with the
// identity, mounted as a file. The container listens on 2587 and 2465 (it runs as a non-root user,
// which may not bind ports under 1024); the ingress maps 587 and 465 onto them. TCP ingress needs
// an environment in a virtual network of its own, created here. No key or password anywhere.

@description('Region of the resources.')
param location string

@description('Tags of every resource.')
param tags object

@description('Name of the container app (the environment and network are named after it).')
param name string

@description('Resource id of the gateway\'s user-assigned identity.')
param identityId string

@description('Client id of that identity (azure-identity and the storage settings pick it by this).')
param identityClientId string

@description('Name of the gateway\'s storage account.')
param storageAccountName string

@description('The image of mailgw-smtp (the Dockerfile at the root), in a registry the environment can pull from anonymously, or with the identity (registryServer).')
param image string

@description('Login server of a private registry pulled with the identity (AcrPull on it is yours to grant), e.g. myregistry.azurecr.io. Empty: a public image.')
param registryServer string

@description('URI of the Key Vault secret of the intake\'s certificate (a Key Vault certificate with content type application/x-pem-file: its secret is the PEM key and chain): https://<vault>.<Key Vault DNS suffix>/secrets/<name>. No version: a renewed certificate is picked up when a new revision starts.')
param certificateSecretUri string

@description('The gateway\'s settings (the Function App\'s MAILGW_* settings), as name/value pairs.')
param gatewaySettings array

@minValue(1)
@maxValue(30)
@description('Most replicas. Each keeps its own rate and failed-login counts (docs/smtp-intake.md).')
param maxReplicas int

var certificateDirectory = '/mnt/tls'
// The container app's secret that references the certificate in Key Vault, and its file name.
var certificateEntry = 'smtp-certificate'
var containerPort = 2587
var containerTlsPort = 2465

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource network 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: 'vnet-${name}'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        '10.42.0.0/16'
      ]
    }
    subnets: [
      {
        name: 'container-apps'
        properties: {
          addressPrefix: '10.42.0.0/23'
          delegations: [
            {
              name: 'container-apps'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
    ]
  }
}

resource managedEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: 'cae-${name}'
  location: location
  tags: tags
  properties: {
    vnetConfiguration: {
      infrastructureSubnetId: network.properties.subnets[0].id
      internal: false
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: managedEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      // The certificate stays in Key Vault: the platform reads it with the identity.
      secrets: [
        {
          name: certificateEntry
          keyVaultUrl: certificateSecretUri
          identity: identityId
        }
      ]
      registries: empty(registryServer) ? [] : [
        {
          server: registryServer
          identity: identityId
        }
      ]
      ingress: {
        external: true
        transport: 'tcp'
        exposedPort: 587
        targetPort: containerPort
        additionalPortMappings: [
          {
            external: true
            exposedPort: 465
            targetPort: containerTlsPort
          }
        ]
      }
    }
    template: {
      containers: [
        {
          name: 'mailgw-smtp'
          image: image
          resources: {
            cpu: json('1.0')
            memory: '2Gi'
          }
          env: concat(gatewaySettings, [
            {
              name: 'AzureWebJobsStorage__queueServiceUri'
              value: storage.properties.primaryEndpoints.queue
            }
            {
              name: 'AzureWebJobsStorage__blobServiceUri'
              value: storage.properties.primaryEndpoints.blob
            }
            {
              name: 'AzureWebJobsStorage__tableServiceUri'
              value: storage.properties.primaryEndpoints.table
            }
            {
              name: 'AzureWebJobsStorage__credential'
              value: 'managedidentity'
            }
            {
              name: 'AzureWebJobsStorage__clientId'
              value: identityClientId
            }
            {
              name: 'MAILGW_SMTP_INTAKE_PORT'
              value: string(containerPort)
            }
            {
              name: 'MAILGW_SMTP_INTAKE_TLS_PORT'
              value: string(containerTlsPort)
            }
            {
              name: 'MAILGW_SMTP_INTAKE_CERT_FILE'
              value: '${certificateDirectory}/${certificateEntry}'
            }
          ])
          volumeMounts: [
            {
              volumeName: 'tls'
              mountPath: certificateDirectory
            }
          ]
          probes: [
            {
              type: 'Liveness'
              tcpSocket: {
                port: containerPort
              }
              periodSeconds: 30
            }
          ]
        }
      ]
      volumes: [
        {
          name: 'tls'
          storageType: 'Secret'
          secrets: [
            {
              secretRef: certificateEntry
              path: certificateEntry
            }
          ]
        }
      ]
      scale: {
        // Always one: an SMTP client expects the port to answer at once.
        minReplicas: 1
        maxReplicas: maxReplicas
      }
    }
  }
}

@description('The public address SMTP clients connect to (ports 587 and 465).')
output fqdn string = app.properties.configuration.ingress.fqdn
output name string = app.name
