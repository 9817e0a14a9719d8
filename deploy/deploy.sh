#!/usr/bin/env bash
# Deploy the image sync Functions app with the Azure CLI, from nothing to running. Idempotent: every
# step compares what exists with what it should be, so a second run changes nothing and a run after a
# hand-made change puts it right. See "Deploy to Azure" in the README.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"

usage() {
  cat <<EOF
Usage: deploy/deploy.sh [--env-file PATH] [options]

Checks first (Azure CLI $AZ_MIN_VERSION or newer, logged in, and the rights this run needs) and stops
before changing anything if something is missing. Then creates or updates, in order: resource group;
host storage account; images storage account (reused if it exists, never reconfigured), its
containers and queues; Key Vault (RBAC) and the partner secrets; Log Analytics workspace and
Application Insights; action group and alert rules (with --alert-email or --alert-action-group); the
function app (Flex Consumption by default, HTTPS only) with a system-assigned identity; role
assignments; app settings (secrets as Key Vault references); the code (zip of the project, remote
build); and, once the code runs, the Event Grid subscriptions. What already is as it should be is left
alone; what differs is put right.

Options (each also settable in the env file or the environment under the name in brackets;
flags win over the environment, which wins over the env file):
  --env-file PATH              KEY=VALUE settings, see deploy/deploy.env.example
  -g, --resource-group NAME    resource group for everything the deploy creates [RESOURCE_GROUP]
  -l, --location REGION        Azure region, e.g. westeurope [LOCATION]
  -n, --app-name NAME          function app name, globally unique [APP_NAME]
  --plan flex|consumption|premium
                               hosting plan (default flex) [PLAN]. consumption/premium use the
                               polling blob trigger (BLOB_TRIGGER_SOURCE=LogsAndContainerScan) and
                               no BlobCreated Event Grid subscription
  --images-account NAME        storage account holding the images; created if missing
                               [IMAGES_STORAGE_ACCOUNT]
  --images-resource-group NAME where the existing images account is (default: searched in the
                               subscription) [IMAGES_RESOURCE_GROUP]
  --container NAME             images container (default product-images) [IMAGES_CONTAINER]
  --host-storage-account NAME  the Functions host's own account (default derived from the app
                               name) [HOST_STORAGE_ACCOUNT]
  --key-vault NAME             Key Vault name (default derived from the app name) [KEY_VAULT_NAME]
  --alert-email ADDRESSES      e-mail the alerts to these addresses (comma-separated): creates an
                               action group and the alert rules [ALERT_EMAIL]
  --alert-action-group ID      resource id of an existing action group to notify as well (or
                               instead) [ALERT_ACTION_GROUP_ID]
  --project-dir PATH           Functions project to package (default: the repository root)
                               [PROJECT_DIR]
  --force-code-deploy          upload the code even if the app already runs the same package
  --dry-run                    print the az commands a fresh deployment would run, run nothing (no
                               az needed; values Azure would return show as <...>)
  -h, --help                   this help

Secrets are read from the environment only: WALLIE_PASSWORD, TRAEDE_ACCESS_TOKEN, TRAEDE_APP_KEY.
They go to Key Vault through a temporary file (az keyvault secret set --file), never on a command
line. Leave one unset to keep the value already in the vault.

Needs: Azure CLI $AZ_MIN_VERSION or newer (logged in), python3, bash 4+, and the rights listed under
"Permissions" in the README (checked before anything is changed).
EOF
}

# The app settings taken from deploy.env, with their defaults: one line each, so that adding a setting
# to the deploy is one line here (and one in deploy.env.example). An empty default means the app's own
# default applies: while such a setting is unset it is removed from the app, so clearing it in
# deploy.env takes effect. WALLIE_/TRAEDE_ base URLs, tenant and user are required (load_config).
# The settings the deploy computes (storage endpoints, queue and container names, Key Vault
# references, trigger source, Application Insights) are in desired_app_settings.
APP_SETTINGS=(
  "IMAGE_PATH_PATTERN="
  "SAS_TTL_HOURS=48"
  "SAS_START_SKEW_MINUTES=15"
  "WALLIE_BASE_URL="
  "WALLIE_TENANT="
  "WALLIE_USERNAME="
  "WALLIE_BATCH_SIZE=500"
  "TRAEDE_BASE_URL="
  "TRAEDE_PAYLOAD_KEY=products"
  "TRAEDE_COLOR_ATTRIBUTE=Color"
  "TRAEDE_USE_SORT_B2C=auto"
  "TRAEDE_SKIP_IF_NO_VARIANT_MATCH=false"
  "PARTNER_CODES_FILE="
  "HTTP_TIMEOUT_SECONDS=30"
  "HTTP_MAX_RETRIES=5"
  "HTTP_RETRY_BACKOFF_SECONDS=0.5"
  "HTTP_RETRY_MAX_SECONDS=120"
  "SYNC_CONCURRENCY=4"
  "SYNC_SCHEDULE=0 0 2 * * *"
  "SYNC_SHARD_PRODUCTS=2000"
  "PRODUCT_SYNC_DELAY_SECONDS=10"
  "PRODUCT_LOCK_SECONDS=60"
  "PRODUCT_RESEND_SECONDS=300"
  "FULL_SYNC_FENCE_SECONDS=60"
  "RUN_HISTORY_DAYS=30"
  "LOG_LEVEL=INFO"
)
APP_SETTING_NAMES=("${APP_SETTINGS[@]%%=*}")

# Resource providers the deployment uses (registered once per subscription).
PROVIDERS=(Microsoft.Web Microsoft.Storage Microsoft.KeyVault Microsoft.EventGrid Microsoft.Insights
  Microsoft.OperationalInsights)

# Roles the deploy gives the app's identity; an assignment of one of these to the identity, on the
# images account or the vault, that the deploy no longer wants is removed (e.g. after a container
# rename).
MANAGED_APP_ROLES=("Storage Blob Data Reader" "Storage Blob Data Contributor" "Storage Blob Data Owner"
  "Storage Blob Delegator" "Storage Queue Data Contributor" "Key Vault Secrets User")

# BlobCreated events of fully committed blobs only. Microsoft's event schema for Blob Storage: with a
# hierarchical namespace, "if you want to ensure that the BlobCreated event is triggered only when a
# Block Blob is completely committed, filter the event for the FlushWithClose REST API call" (CreateFile
# creates an empty file first); PutBlob, PutBlockList and CopyBlob fire once the blob is committed
# (storage-blob-event-overview, "Practices for consuming events"); an SFTP upload sends SftpCreate for
# the empty blob and SftpCommit when its content is committed (event-schema-blob-storage, SFTP).
COMMITTED_BLOB_APIS=(CopyBlob PutBlob PutBlockList FlushWithClose SftpCommit)

FORCE_CODE_DEPLOY=0

parse_args() {
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      -l | --location) FLAGS[LOCATION]="${2:?$1 needs a value}"; shift 2 ;;
      --plan) FLAGS[PLAN]="${2:?$1 needs a value}"; shift 2 ;;
      --container) FLAGS[IMAGES_CONTAINER]="${2:?$1 needs a value}"; shift 2 ;;
      --host-storage-account) FLAGS[HOST_STORAGE_ACCOUNT]="${2:?$1 needs a value}"; shift 2 ;;
      --alert-email) FLAGS[ALERT_EMAIL]="${2:?$1 needs a value}"; shift 2 ;;
      --alert-action-group) FLAGS[ALERT_ACTION_GROUP_ID]="${2:?$1 needs a value}"; shift 2 ;;
      --project-dir) FLAGS[PROJECT_DIR]="${2:?$1 needs a value}"; shift 2 ;;
      --force-code-deploy) FORCE_CODE_DEPLOY=1; shift ;;
      *)
        parse_common_option "$@"
        ((COMMON_SHIFT)) || { usage >&2; die "unknown argument: $1"; }
        shift "$COMMON_SHIFT"
        ;;
    esac
  done
}

ALERT_EMAILS=()

load_config() {
  load_env_and_flags
  apply_common_defaults
  PROJECT_DIR="${PROJECT_DIR:-$(cd "$SCRIPT_DIR/.." && pwd)}"
  FLEX_INSTANCE_MEMORY="${FLEX_INSTANCE_MEMORY:-2048}"
  PREMIUM_SKU="${PREMIUM_SKU:-EP1}"
  local entry name
  for entry in "${APP_SETTINGS[@]}"; do
    name="${entry%%=*}"
    if [[ -z "${!name:-}" ]]; then
      printf -v "$name" '%s' "${entry#*=}"
    fi
  done
  if [[ "$PLAN" == flex ]]; then
    BLOB_TRIGGER_SOURCE="EventGrid"
  else
    BLOB_TRIGGER_SOURCE="LogsAndContainerScan"
  fi
  require_vars RESOURCE_GROUP LOCATION APP_NAME IMAGES_STORAGE_ACCOUNT \
    WALLIE_BASE_URL WALLIE_TENANT WALLIE_USERNAME TRAEDE_BASE_URL
  validate_names
  local address
  if [[ -n "${ALERT_EMAIL:-}" ]]; then
    IFS=',' read -ra ALERT_EMAILS <<<"${ALERT_EMAIL// /}"
    for address in "${ALERT_EMAILS[@]}"; do
      [[ "$address" =~ ^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$ ]] \
        || die "ALERT_EMAIL: '$address' is not an e-mail address (separate several with commas)"
    done
  fi
  if [[ -n "${ALERT_ACTION_GROUP_ID:-}" ]]; then
    [[ "$(lower "$ALERT_ACTION_GROUP_ID")" =~ ^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.insights/actiongroups/[^/]+$ ]] \
      || die "ALERT_ACTION_GROUP_ID: expected /subscriptions/<id>/resourceGroups/<group>/providers/microsoft.insights/actionGroups/<name>"
  fi
}

alerts_enabled() {
  ((${#ALERT_EMAILS[@]})) || [[ -n "${ALERT_ACTION_GROUP_ID:-}" ]]
}

# ---------------------------------------------------------------------------------------------------
# Preflight: everything below only reads. It stops before anything is created when az is too old, you
# are not logged in, or you lack a right this run needs.

DEPLOYER_ID=""
DEPLOYER_TYPE=""
TMP_DIR=""
RG_EXISTS=0
VAULT_EXISTS=0
IMAGES_FOUND=""
PROVIDERS_TO_REGISTER=()

preflight() {
  command -v python3 >/dev/null || die "python3 is needed (it builds the package)"
  if [[ "$DRY_RUN" == 1 ]]; then
    SUBSCRIPTION_ID="<subscription-id>"
    DEPLOYER_ID="<your-object-id>"
    DEPLOYER_TYPE="User"
    PROVIDERS_TO_REGISTER=("${PROVIDERS[@]}")
    plan_rights
    log "Dry run: nothing is read from Azure, so neither the Azure CLI version ($AZ_MIN_VERSION or newer) nor your rights are checked. A real run first checks that you may do this:"
    print_needed_rights
    return
  fi
  require_az
  DEPLOYER_ID="$(signed_in_object_id)" || die "could not read your object id from your Azure CLI login: run 'az login' again"
  if [[ "$LOGIN_TYPE" == servicePrincipal ]]; then
    DEPLOYER_TYPE="ServicePrincipal"  # a service principal or a managed identity
  else
    DEPLOYER_TYPE="User"
  fi
  log "Subscription $SUBSCRIPTION_ID, deploying as $LOGIN_NAME ($DEPLOYER_ID)"
  discover
  plan_rights
  check_rights
}

discover() {
  if resource_exists group show --name "$RESOURCE_GROUP"; then
    RG_EXISTS=1
  fi
  local registered namespace
  registered="$(az provider list --query "[?registrationState=='Registered'].namespace" --output tsv)" \
    || die "could not list the subscription's resource providers"
  for namespace in "${PROVIDERS[@]}"; do
    grep -qix -- "$namespace" <<<"$registered" || PROVIDERS_TO_REGISTER+=("$namespace")
  done
  IMAGES_FOUND="$(find_images_account)"
  if [[ -z "$IMAGES_FOUND" && -n "${IMAGES_RESOURCE_GROUP:-}" && "$IMAGES_RESOURCE_GROUP" != "$RESOURCE_GROUP" ]]; then
    die "storage account $IMAGES_STORAGE_ACCOUNT not found in $IMAGES_RESOURCE_GROUP (leave IMAGES_RESOURCE_GROUP unset to create it in $RESOURCE_GROUP)"
  fi
  if ((RG_EXISTS)) && resource_exists keyvault show --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP"; then
    VAULT_EXISTS=1
  fi
  if [[ -n "${ALERT_ACTION_GROUP_ID:-}" ]] \
    && ! resource_exists resource show --ids "$ALERT_ACTION_GROUP_ID" --api-version 2023-01-01; then
    die "ALERT_ACTION_GROUP_ID: action group $ALERT_ACTION_GROUP_ID not found"
  fi
}

# What this run will do, as rights (see check_rights in lib.sh). Contributor on the resource group
# covers the resources; the role assignments need Owner, User Access Administrator or Role Based
# Access Control Administrator; the subscription-scope rights are needed only in the cases named.
plan_rights() {
  local sub="/subscriptions/$SUBSCRIPTION_ID" rg="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP"
  if ((!RG_EXISTS)); then
    need "$sub" Microsoft.Resources/subscriptions/resourceGroups/write "create resource group $RESOURCE_GROUP"
    rg="$sub"  # a new group inherits what you may do in the subscription
  fi
  local namespace
  for namespace in "${PROVIDERS_TO_REGISTER[@]}"; do
    need "$sub" "$namespace/register/action" "register the $namespace resource provider (once per subscription)"
  done
  if ((!VAULT_EXISTS)); then
    # Microsoft's "Azure Key Vault recovery management": deletedVaults/read is a subscription-level
    # right; recovering needs vaults/write (below). A recovered vault comes back without its role
    # assignments (Key Vault soft-delete overview), which ensure_role and ensure_app_roles put back.
    need "$sub" Microsoft.KeyVault/locations/deletedVaults/read \
      "find out whether Key Vault $KEY_VAULT_NAME is soft-deleted (then it is recovered); a subscription-scope right"
  fi
  need "$rg" Microsoft.Storage/storageAccounts/write "create the storage accounts"
  need "$rg" Microsoft.KeyVault/vaults/write "create or recover Key Vault $KEY_VAULT_NAME"
  need "$rg" Microsoft.OperationalInsights/workspaces/write "create the Log Analytics workspace"
  need "$rg" Microsoft.Insights/components/write "create Application Insights"
  need "$rg" Microsoft.Web/serverfarms/write "create the hosting plan"
  need "$rg" Microsoft.Web/sites/write "create the function app"
  need "$rg" Microsoft.Authorization/roleAssignments/write \
    "give the app's identity its roles, and you Key Vault Secrets Officer on the vault"
  if alerts_enabled; then
    need "$rg" Microsoft.Insights/scheduledQueryRules/write "create the alert rules"
  fi
  if ((${#ALERT_EMAILS[@]})); then
    need "$rg" Microsoft.Insights/actionGroups/write "create the action group that e-mails the alerts"
  fi
  local account_id account_rg _location _tag
  IFS=$'\t' read -r account_id account_rg _location _tag <<<"$IMAGES_FOUND"
  if [[ -n "$account_id" && "$(lower "$account_rg")" != "$(lower "$RESOURCE_GROUP")" ]]; then
    need "$account_id" Microsoft.Authorization/roleAssignments/write "give the app's identity its roles on the images account"
    need "$account_id" Microsoft.Storage/storageAccounts/blobServices/containers/write "create the app's containers"
    need "$account_id" Microsoft.Storage/storageAccounts/queueServices/queues/write "create the app's queues"
    need "$sub/resourceGroups/$account_rg" Microsoft.EventGrid/systemTopics/eventSubscriptions/write \
      "subscribe the app to the images account's blob events"
  else
    need "$rg" Microsoft.EventGrid/systemTopics/write "create the Event Grid system topic of the images account"
  fi
}

# ---------------------------------------------------------------------------------------------------
# Steps. Each reads what exists and creates or corrects only what differs.

ensure_providers() {
  local namespace
  for namespace in "${PROVIDERS_TO_REGISTER[@]}"; do
    log "Registering resource provider $namespace"
    az_change provider register --namespace "$namespace" --wait
  done
}

ensure_resource_group() {
  if ((RG_EXISTS)); then
    log "Resource group $RESOURCE_GROUP: exists"
  else
    log "Resource group $RESOURCE_GROUP: creating in $LOCATION"
    az_change group create --name "$RESOURCE_GROUP" --location "$LOCATION" \
      --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
  fi
}

create_storage_account() {
  az_change storage account create --name "$1" --resource-group "$RESOURCE_GROUP" \
    --location "$LOCATION" --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 \
    --allow-blob-public-access false --https-only true \
    --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
}

ensure_host_storage() {
  if resource_exists storage account show --name "$HOST_STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP"; then
    log "Host storage account $HOST_STORAGE_ACCOUNT: exists"
  else
    log "Host storage account $HOST_STORAGE_ACCOUNT: creating"
    create_storage_account "$HOST_STORAGE_ACCOUNT"
  fi
}

IMAGES_ACCOUNT_ID=""
IMAGES_ACCOUNT_RG=""
IMAGES_ACCOUNT_LOCATION=""
IMAGES_ACCOUNT_CREATED=0
BLOB_SERVICE_URI=""
QUEUE_SERVICE_URI=""

ensure_images_account() {
  if [[ -n "$IMAGES_FOUND" ]]; then
    local _tag
    IFS=$'\t' read -r IMAGES_ACCOUNT_ID IMAGES_ACCOUNT_RG IMAGES_ACCOUNT_LOCATION _tag <<<"$IMAGES_FOUND"
    log "Images storage account $IMAGES_STORAGE_ACCOUNT: exists in $IMAGES_ACCOUNT_RG, reused as it is"
  else
    log "Images storage account $IMAGES_STORAGE_ACCOUNT: creating"
    create_storage_account "$IMAGES_STORAGE_ACCOUNT"
    IMAGES_ACCOUNT_CREATED=1
    IMAGES_ACCOUNT_RG="$RESOURCE_GROUP"
    IMAGES_ACCOUNT_LOCATION="$LOCATION"
    IMAGES_ACCOUNT_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Storage/storageAccounts/$IMAGES_STORAGE_ACCOUNT"
    if [[ "$DRY_RUN" != 1 ]]; then
      IMAGES_ACCOUNT_ID="$(az storage account show --name "$IMAGES_STORAGE_ACCOUNT" \
        --resource-group "$RESOURCE_GROUP" --query id --output tsv)"
    fi
  fi
  local details access
  if details="$(az_read storage account show --ids "$IMAGES_ACCOUNT_ID" --query \
    "[primaryEndpoints.blob, primaryEndpoints.queue, publicNetworkAccess, networkRuleSet.defaultAction]" \
    --output tsv)"; then
    BLOB_SERVICE_URI="$(sed -n 1p <<<"$details")"
    QUEUE_SERVICE_URI="$(sed -n 2p <<<"$details")"
    access="$(sed -n '3,4p' <<<"$details")"
  else
    BLOB_SERVICE_URI="https://$IMAGES_STORAGE_ACCOUNT.blob.core.windows.net/"
    QUEUE_SERVICE_URI="https://$IMAGES_STORAGE_ACCOUNT.queue.core.windows.net/"
    access=""
  fi
  BLOB_SERVICE_URI="${BLOB_SERVICE_URI%/}"
  QUEUE_SERVICE_URI="${QUEUE_SERVICE_URI%/}"
  # The partners download the images themselves over the internet: a firewalled account breaks
  # that. The deploy never changes an existing account's network rules; it only says so.
  if grep -qx -e Disabled -e Deny <<<"$access"; then
    warn "storage account $IMAGES_STORAGE_ACCOUNT is not reachable from the internet (public access disabled or firewall default Deny)."
    warn "Wallie and TRAEDE download the images by SAS URL from Azure's public IP range: they will fail until the account allows that. The deploy does not change network rules."
  fi
}

# Containers and queues go through Azure Resource Manager rather than the data endpoints, so neither
# the account's firewall nor data-plane roles of the person deploying matter. What the deploy creates
# carries the metadata image_sync_app=<app>, so teardown can tell it from what was already there.
ensure_containers_and_queues() {
  local container existing=""
  existing="$(az_read storage container-rm list --storage-account "$IMAGES_ACCOUNT_ID" \
    --query "[].name" --output tsv || true)"
  for container in "$IMAGES_CONTAINER" "${APP_CONTAINERS[@]}"; do
    if grep -qxF -- "$container" <<<"$existing"; then
      log "Container $container: exists"
    else
      log "Container $container: creating (private)"
      az_change storage container-rm create --storage-account "$IMAGES_ACCOUNT_ID" \
        --name "$container" --public-access off --metadata "$MANAGED_METADATA_KEY=$APP_NAME" --output none
    fi
  done
  local queue queue_id
  for queue in "${QUEUES[@]}"; do
    queue_id="$IMAGES_ACCOUNT_ID/queueServices/default/queues/$queue"
    if resource_exists resource show --ids "$queue_id" --api-version "$STORAGE_API_VERSION"; then
      log "Queue $queue: exists"
    else
      log "Queue $queue: creating"
      az_change resource create --id "$queue_id" --api-version "$STORAGE_API_VERSION" \
        --properties "{\"metadata\":{\"$MANAGED_METADATA_KEY\":\"$APP_NAME\"}}" --output none
    fi
  done
}

KEY_VAULT_ID=""
KEY_VAULT_URI=""

ensure_key_vault() {
  if ((VAULT_EXISTS)); then
    log "Key Vault $KEY_VAULT_NAME: exists"
  else
    local deleted=""
    # Listing deleted vaults is a subscription-scope right (Microsoft.KeyVault/locations/deletedVaults/
    # read), checked in the preflight: without it a soft-deleted vault would look absent and creating
    # one of the same name would fail.
    if [[ "$DRY_RUN" != 1 ]]; then
      deleted="$(az keyvault list-deleted --resource-type vault \
        --query "[?name=='$KEY_VAULT_NAME'].name" --output tsv)" \
        || die "could not list soft-deleted Key Vaults (a subscription-scope right, see 'Permissions' in the README)"
    fi
    if [[ -n "$deleted" ]]; then
      # A torn-down deployment leaves its vault soft-deleted for 90 days, holding the name.
      log "Key Vault $KEY_VAULT_NAME: recovering the soft-deleted vault"
      az_change keyvault recover --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP" \
        --location "$LOCATION" --output none
    else
      log "Key Vault $KEY_VAULT_NAME: creating (RBAC authorization)"
      az_change keyvault create --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP" \
        --location "$LOCATION" --enable-rbac-authorization true \
        --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
    fi
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    KEY_VAULT_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.KeyVault/vaults/$KEY_VAULT_NAME"
    KEY_VAULT_URI="https://$KEY_VAULT_NAME.vault.azure.net/"
    return
  fi
  local vault
  vault="$(az keyvault show --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "[id, properties.vaultUri]" --output tsv)"
  KEY_VAULT_ID="$(sed -n 1p <<<"$vault")"
  KEY_VAULT_URI="$(sed -n 2p <<<"$vault")"
  KEY_VAULT_URI="${KEY_VAULT_URI%/}/"
}

# ensure_role PRINCIPAL_ID PRINCIPAL_TYPE ROLE SCOPE
ensure_role() {
  local principal="$1" type="$2" role="$3" scope="$4" existing=""
  existing="$(az_read role assignment list --assignee-object-id "$principal" --role "$role" --scope "$scope" \
    --fill-principal-name false --query "[].id" --output tsv || true)"
  if [[ -n "$existing" ]]; then
    note "role '$role' on ${scope##*/providers/}: assigned"
    return
  fi
  create_role_assignment "$principal" "$type" "$role" "$scope"
}

create_role_assignment() {
  local principal="$1" type="$2" role="$3" scope="$4"
  note "role '$role' on ${scope##*/providers/}: assigning"
  # --assignee-object-id with the principal type skips the Graph lookup, which fails for a few
  # minutes after an identity is created; retry covers replication delays anyway.
  retry "role assignment '$role'" az_change role assignment create \
    --assignee-object-id "$principal" --assignee-principal-type "$type" \
    --role "$role" --scope "$scope" --output none
}

SECRETS_ROTATED=0

# Secret name in the vault -> environment variable holding a new value.
SECRETS=(
  "WALLIE-PASSWORD:WALLIE_PASSWORD"
  "TRAEDE-ACCESS-TOKEN:TRAEDE_ACCESS_TOKEN"
  "TRAEDE-APP-KEY:TRAEDE_APP_KEY"
)

ensure_secrets() {
  log "Key Vault secrets (your identity needs 'Key Vault Secrets Officer' on the vault)"
  ensure_role "$DEPLOYER_ID" "$DEPLOYER_TYPE" "Key Vault Secrets Officer" "$KEY_VAULT_ID"
  local existing="" entry name var
  if [[ "$DRY_RUN" != 1 ]]; then
    # The first call after the role assignment may be refused until the assignment applies.
    existing="$(retry "access to Key Vault $KEY_VAULT_NAME" \
      az keyvault secret list --vault-name "$KEY_VAULT_NAME" --query "[].name" --output tsv)"
  fi
  for entry in "${SECRETS[@]}"; do
    name="${entry%%:*}"
    var="${entry#*:}"
    if [[ -z "${!var:-}" ]]; then
      if grep -qx -- "$name" <<<"$existing"; then
        note "secret $name: kept (no new value in \$$var)"
      elif [[ "$DRY_RUN" == 1 ]]; then
        note "secret $name: would need \$$var"
      else
        die "secret $name is not in Key Vault $KEY_VAULT_NAME and \$$var is not set: export it and run again"
      fi
      continue
    fi
    if grep -qx -- "$name" <<<"$existing"; then
      local current
      current="$(az keyvault secret show --vault-name "$KEY_VAULT_NAME" --name "$name" \
        --query value --output tsv)"
      if [[ "$current" == "${!var}" ]]; then
        note "secret $name: unchanged"
        continue
      fi
      note "secret $name: new version from \$$var"
      SECRETS_ROTATED=1
    else
      note "secret $name: setting from \$$var"
    fi
    set_secret "$name" "$var"
  done
}

# The value goes through a file readable only by this user, so it never appears in a process list.
set_secret() {
  local name="$1" var="$2"
  if [[ "$DRY_RUN" == 1 ]]; then
    print_az keyvault secret set --vault-name "$KEY_VAULT_NAME" --name "$name" \
      --file "<temporary file holding \$$var>" --encoding utf-8 --output none
    return
  fi
  local file="$TMP_DIR/secret-$name"
  (umask 077 && printf '%s' "${!var}" >"$file")
  az keyvault secret set --vault-name "$KEY_VAULT_NAME" --name "$name" \
    --file "$file" --encoding utf-8 --output none
  rm -f "$file"
}

# ensure_arm_resource LABEL ID API_VERSION BODY: creates the resource from the full JSON BODY, or, when
# it exists, compares it with BODY (azhelp.py matches) and writes BODY again only if they differ.
# Leaves the resource as Azure now has it (JSON) in ARM_CURRENT (empty in a dry run).
ARM_CURRENT=""
ensure_arm_resource() {
  local label="$1" id="$2" api="$3" body="$4" rc=0
  ARM_CURRENT="$(az_read resource show --ids "$id" --api-version "$api" --output json 2>"$TMP_DIR/arm-error")" || rc=$?
  case "$rc" in
    0)
      printf '%s' "$body" >"$TMP_DIR/arm-desired.json"
      if python3 "$SCRIPT_DIR/azhelp.py" matches "$TMP_DIR/arm-desired.json" <<<"$ARM_CURRENT"; then
        log "$label: exists, as configured"
        return
      fi
      log "$label: differs from what the deploy sets: updating"
      ;;
    3) log "$label: creating" ;;
    *)
      cat "$TMP_DIR/arm-error" >&2
      die "could not read $label (exit $rc)"
      ;;
  esac
  ARM_CURRENT="$(az_change resource create --id "$id" --api-version "$api" --is-full-object \
    --properties "$body" --output json)"
}

APP_INSIGHTS_CONNECTION_STRING=""
ALERT_RULE_NAMES=()

monitoring_resources() {
  local args=(resources --resource-group-id "/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP"
    --app "$APP_NAME" --location "$LOCATION" --workspace-name "$LOG_WORKSPACE_NAME"
    --component-name "$APP_INSIGHTS_NAME" --action-group-name "$ACTION_GROUP_NAME")
  local address queue
  for address in "${ALERT_EMAILS[@]}"; do
    args+=(--email "$address")
  done
  if [[ -n "${ALERT_ACTION_GROUP_ID:-}" ]]; then
    args+=(--action-group-id "$ALERT_ACTION_GROUP_ID")
  fi
  for queue in "${POISON_QUEUES[@]}"; do
    args+=(--poison-queue "$queue")
  done
  python3 "$SCRIPT_DIR/monitoring.py" "${args[@]}"
}

# Application Insights is created here, workspace-based and in the app's resource group, and wired
# through the APPLICATIONINSIGHTS_CONNECTION_STRING setting: 'az functionapp create' would otherwise
# try to make a default workspace itself and silently go without Application Insights when it cannot
# (that needs subscription rights and the Microsoft.OperationalInsights provider), so it is told not
# to (--disable-app-insights). With ALERT_EMAIL or ALERT_ACTION_GROUP_ID, the action group and alert
# rules follow (deploy/monitoring.py defines them); alert resources of this deployment that are no
# longer wanted are deleted.
ensure_monitoring() {
  local lines=() line kind id api body wanted=()
  mapfile -t lines < <(monitoring_resources)
  ((${#lines[@]})) || die "deploy/monitoring.py printed nothing"
  for line in "${lines[@]}"; do
    IFS=$'\t' read -r kind id api body <<<"$line"
    wanted+=("$(lower "$id")")
    case "$kind" in
      workspace) ensure_arm_resource "Log Analytics workspace ${id##*/}" "$id" "$api" "$body" ;;
      component)
        ensure_arm_resource "Application Insights ${id##*/}" "$id" "$api" "$body"
        if [[ "$DRY_RUN" == 1 ]]; then
          APP_INSIGHTS_CONNECTION_STRING="<connection string of ${id##*/}>"
        else
          APP_INSIGHTS_CONNECTION_STRING="$(python3 "$SCRIPT_DIR/azhelp.py" get properties.ConnectionString \
            <<<"$ARM_CURRENT")" || die "Application Insights ${id##*/} has no connection string"
        fi
        ;;
      action-group) ensure_arm_resource "Action group ${id##*/}" "$id" "$api" "$body" ;;
      alert-rule)
        ensure_arm_resource "Alert rule ${id##*/}" "$id" "$api" "$body"
        ALERT_RULE_NAMES+=("${id##*/}")
        ;;
    esac
  done
  if ! alerts_enabled; then
    note "no alerts: set ALERT_EMAIL (or ALERT_ACTION_GROUP_ID) to be told when a sync fails"
  fi
  [[ "$DRY_RUN" == 1 ]] && return
  # Alert rules first: they point at the action group.
  local existing type
  existing="$(az resource list --resource-group "$RESOURCE_GROUP" \
    --query "[?tags.\"$MANAGED_TAG_KEY\"=='$APP_NAME'].[id, type]" --output tsv)"
  for kind in microsoft.insights/scheduledqueryrules microsoft.insights/actiongroups; do
    while IFS=$'\t' read -r id type; do
      [[ -n "$id" && "$(lower "$type")" == "$kind" ]] || continue
      if ! printf '%s\n' "${wanted[@]}" | grep -qxF -- "$(lower "$id")"; then
        log "${id##*/}: no longer wanted (alerting changed in deploy.env): deleting"
        az_change resource delete --ids "$id" --output none
      fi
    done <<<"$existing"
  done
}

APP_ID=""
APP_HOST=""
APP_PRINCIPAL_ID=""

APP_DETAILS_QUERY="[id, defaultHostName, httpsOnly, serverFarmId, tags.codeSha256, identity.principalId]"
DEPLOYED_CODE_SHA=""

ensure_function_app() {
  local created=0 rc=0 details=""
  details="$(az_read functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "$APP_DETAILS_QUERY" --output tsv 2>"$TMP_DIR/app-error")" || rc=$?
  if ((rc == 0)); then
    log "Function app $APP_NAME: exists"
  elif ((rc != 3)); then
    cat "$TMP_DIR/app-error" >&2
    die "could not read function app $APP_NAME (exit $rc)"
  else
    created=1
    local common=(--name "$APP_NAME" --resource-group "$RESOURCE_GROUP"
      --storage-account "$HOST_STORAGE_ACCOUNT" --runtime python --runtime-version 3.11
      --https-only true --disable-app-insights true
      --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none)
    case "$PLAN" in
      flex)
        log "Function app $APP_NAME: creating on Flex Consumption"
        local flex=(--flexconsumption-location "$LOCATION" --instance-memory "$FLEX_INSTANCE_MEMORY")
        if [[ -n "${FLEX_MAXIMUM_INSTANCES:-}" ]]; then
          flex+=(--maximum-instance-count "$FLEX_MAXIMUM_INSTANCES")
        fi
        az_change functionapp create "${common[@]}" "${flex[@]}"
        ;;
      consumption)
        log "Function app $APP_NAME: creating on the (Linux) Consumption plan"
        az_change functionapp create "${common[@]}" --consumption-plan-location "$LOCATION" \
          --os-type Linux --functions-version 4
        ;;
      premium)
        local plan_found=""
        plan_found="$(az_read functionapp plan list --resource-group "$RESOURCE_GROUP" \
          --query "[?name=='$PREMIUM_PLAN_NAME'].id" --output tsv || true)"
        if [[ -z "$plan_found" ]]; then
          log "Elastic Premium plan $PREMIUM_PLAN_NAME: creating ($PREMIUM_SKU, Linux)"
          az_change functionapp plan create --name "$PREMIUM_PLAN_NAME" --resource-group "$RESOURCE_GROUP" \
            --location "$LOCATION" --sku "$PREMIUM_SKU" --is-linux true \
            --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
        fi
        log "Function app $APP_NAME: creating on $PREMIUM_PLAN_NAME"
        az_change functionapp create "${common[@]}" --plan "$PREMIUM_PLAN_NAME" \
          --os-type Linux --functions-version 4
        ;;
    esac
  fi
  local https_only="true" plan_id
  if [[ "$DRY_RUN" == 1 ]]; then
    APP_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Web/sites/$APP_NAME"
    APP_HOST="<default host name of $APP_NAME>"
    plan_id="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Web/serverfarms/<plan az creates for $APP_NAME>"
  else
    if ((created)); then
      details="$(az functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
        --query "$APP_DETAILS_QUERY" --output tsv)"
    fi
    local fields=() i
    mapfile -t fields <<<"$details"
    for i in "${!fields[@]}"; do
      [[ "${fields[$i]}" == None ]] && fields[i]=""  # how tsv prints a missing value in a list
    done
    APP_ID="${fields[0]:-}"
    APP_HOST="${fields[1]:-}"
    https_only="${fields[2]:-}"
    plan_id="${fields[3]:-}"
    DEPLOYED_CODE_SHA="${fields[4]:-}"
    APP_PRINCIPAL_ID="${fields[5]:-}"
  fi
  # Flex Consumption gives every app a plan of its own, which 'az functionapp create' makes: tag it as
  # the deploy's, so a teardown that cannot delete the whole resource group finds it. (The classic
  # Consumption plan Azure picks may be shared by other apps in the group, so it is left untagged.)
  if ((created)) && [[ "$PLAN" == flex ]]; then
    az_change tag update --resource-id "$plan_id" --operation Merge --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
  fi
  if [[ "$(lower "$https_only")" == true ]]; then
    note "HTTPS only: on"
  else
    log "HTTPS only: turning on (it was off)"
    az_change functionapp update --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --set httpsOnly=true --output none
  fi
}

# APP_PRINCIPAL_ID comes from ensure_function_app's read of the app.
ensure_identity() {
  if [[ -n "$APP_PRINCIPAL_ID" ]]; then
    log "System-assigned identity: exists ($APP_PRINCIPAL_ID)"
    return
  fi
  log "System-assigned identity: assigning"
  APP_PRINCIPAL_ID="$(az_change functionapp identity assign --name "$APP_NAME" \
    --resource-group "$RESOURCE_GROUP" --identities '[system]' --query principalId --output tsv)"
  if [[ "$DRY_RUN" == 1 ]]; then
    APP_PRINCIPAL_ID="<principal-id of $APP_NAME>"
  fi
  [[ -n "$APP_PRINCIPAL_ID" ]] || die "no principalId from 'az functionapp identity assign'"
}

# The roles the app's identity needs, as "ROLE|SCOPE" lines. Sources: Microsoft's "Azure Blob storage
# trigger" permissions table (the blob trigger needs Storage Blob Data Owner and Storage Queue Data
# Contributor on the account of its connection: the polling trigger keeps its receipts and leases
# there); the Event Grid source only reads the blob it is given, so Flex needs only read access to the
# container. User-delegation SAS needs Storage Blob Delegator on the account. The app creates, leases
# and deletes blobs in SYNC_STATE_CONTAINER and writes reports to RUN_HISTORY_CONTAINER.
desired_app_roles() {
  local account="$IMAGES_ACCOUNT_ID" container
  if [[ "$PLAN" == flex ]]; then
    printf '%s\n' "Storage Blob Data Reader|$account/blobServices/default/containers/$IMAGES_CONTAINER"
    for container in "${APP_CONTAINERS[@]}"; do
      printf '%s\n' "Storage Blob Data Contributor|$account/blobServices/default/containers/$container"
    done
  else
    printf '%s\n' "Storage Blob Data Owner|$account"
  fi
  printf '%s\n' "Storage Blob Delegator|$account"
  local queue
  for queue in "${QUEUES[@]}"; do
    printf '%s\n' "Storage Queue Data Contributor|$account/queueServices/default/queues/$queue"
  done
  printf '%s\n' "Key Vault Secrets User|$KEY_VAULT_ID"
}

is_managed_app_role() {
  local role
  for role in "${MANAGED_APP_ROLES[@]}"; do
    [[ "$(lower "$role")" == "$(lower "$1")" ]] && return 0
  done
  return 1
}

# Gives the identity every desired role it lacks, then removes the deploy's roles it should no longer
# have (on the images account or the vault only), in that order so that it never loses access midway.
ensure_app_roles() {
  log "Role assignments for the app's identity"
  local desired=() existing="" line role scope id
  mapfile -t desired < <(desired_app_roles)
  if [[ "$DRY_RUN" != 1 ]]; then
    existing="$(role_assignments_of "$APP_PRINCIPAL_ID" "$IMAGES_ACCOUNT_ID"
      role_assignments_of "$APP_PRINCIPAL_ID" "$KEY_VAULT_ID")"
  fi
  declare -A have=()
  while IFS=$'\t' read -r id role scope; do
    [[ -n "$id" ]] && have["$(lower "$role|$scope")"]="$id"
  done <<<"$existing"
  for line in "${desired[@]}"; do
    role="${line%%|*}"
    scope="${line#*|}"
    if [[ -n "${have[$(lower "$line")]+set}" ]]; then
      note "role '$role' on ${scope##*/providers/}: assigned"
      unset "have[$(lower "$line")]"
    else
      create_role_assignment "$APP_PRINCIPAL_ID" ServicePrincipal "$role" "$scope"
    fi
  done
  local stale=() key account vault
  account="$(lower "$IMAGES_ACCOUNT_ID")"
  vault="$(lower "$KEY_VAULT_ID")"
  for key in "${!have[@]}"; do
    role="${key%%|*}"
    scope="${key#*|}"
    if is_managed_app_role "$role" && [[ "$scope" == "$account" || "$scope" == "$account/"* || "$scope" == "$vault" ]]; then
      note "role '$role' on ${scope##*/providers/}: no longer needed, removing"
      stale+=("${have[$key]}")
    fi
  done
  if ((${#stale[@]})); then
    az_change role assignment delete --ids "${stale[@]}" --output none
  fi
}

kv_reference() {
  printf '@Microsoft.KeyVault(SecretUri=%ssecrets/%s/)' "$KEY_VAULT_URI" "$1"
}

# Every app setting the deploy manages, as NAME=VALUE; an empty VALUE means "not set". None of them is a
# secret: the partner secrets are Key Vault references, and Application Insights' connection string
# carries an instrumentation key, which Microsoft's "Connection strings in Application Insights" says is
# an identifier, not a security token or key.
desired_app_settings() {
  local entry name
  for entry in "${APP_SETTINGS[@]}"; do
    name="${entry%%=*}"
    printf '%s=%s\n' "$name" "${!name}"
  done
  printf '%s\n' \
    "IMAGES_STORAGE__blobServiceUri=$BLOB_SERVICE_URI" \
    "IMAGES_STORAGE__queueServiceUri=$QUEUE_SERVICE_URI" \
    "IMAGES_CONTAINER=$IMAGES_CONTAINER" \
    "SYNC_SHARD_QUEUE=$SYNC_SHARD_QUEUE" \
    "PRODUCT_SYNC_QUEUE=$PRODUCT_SYNC_QUEUE" \
    "SYNC_STATE_CONTAINER=$SYNC_STATE_CONTAINER" \
    "RUN_HISTORY_CONTAINER=$RUN_HISTORY_CONTAINER" \
    "WALLIE_PASSWORD=$(kv_reference WALLIE-PASSWORD)" \
    "TRAEDE_ACCESS_TOKEN=$(kv_reference TRAEDE-ACCESS-TOKEN)" \
    "TRAEDE_APP_KEY=$(kv_reference TRAEDE-APP-KEY)" \
    "BLOB_TRIGGER_SOURCE=$BLOB_TRIGGER_SOURCE" \
    "APPLICATIONINSIGHTS_CONNECTION_STRING=$APP_INSIGHTS_CONNECTION_STRING"
}

ensure_app_settings() {
  local desired=()
  mapfile -t desired < <(desired_app_settings)
  # Only changed settings are written, and only settings the deploy manages are removed: every write
  # restarts the app, and the host's own settings (AzureWebJobsStorage, ...) are not the deploy's.
  declare -A current=()
  local name value
  if [[ "$DRY_RUN" != 1 ]]; then
    while IFS=$'\t' read -r name value; do
      [[ -n "$name" ]] && current["$name"]="$value"
    done < <(az functionapp config appsettings list --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --query "[].[name, value]" --output tsv)
  fi
  local changed=() removed=() setting
  for setting in "${desired[@]}"; do
    name="${setting%%=*}"
    value="${setting#*=}"
    if [[ -z "$value" ]]; then
      [[ -n "${current[$name]+set}" ]] && removed+=("$name")
    elif [[ -z "${current[$name]+set}" || "${current[$name]}" != "$value" ]]; then
      changed+=("$setting")
    fi
  done
  if ((${#changed[@]} == 0 && ${#removed[@]} == 0)); then
    log "App settings: up to date"
    return
  fi
  APP_RESTARTED=1
  if ((${#changed[@]})); then
    log "App settings: writing ${#changed[@]} (${changed[*]%%=*})"
    az_change functionapp config appsettings set --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --settings "${changed[@]}" --output none
  fi
  if ((${#removed[@]})); then
    log "App settings: removing ${removed[*]} (no longer set in deploy.env: the app's default applies)"
    az_change functionapp config appsettings delete --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --setting-names "${removed[@]}" --output none
  fi
}

ensure_code() {
  local zip="${DEPLOY_BUILD_DIR:-$SCRIPT_DIR/.build}/$APP_NAME.zip" line sha
  log "Package: building from $PROJECT_DIR (honouring its .funcignore)"
  line="$(python3 "$SCRIPT_DIR/package.py" "$PROJECT_DIR" "$zip")"
  sha="${line%% *}"
  if [[ "$DEPLOYED_CODE_SHA" == "$sha" && "$FORCE_CODE_DEPLOY" != 1 ]]; then
    log "Code: up to date (package sha256 $sha)"
    return
  fi
  # On Flex Consumption this command uses the One Deploy endpoint (/api/publish, RemoteBuild=true);
  # on Consumption/Premium it is Kudu zip deploy with SCM_DO_BUILD_DURING_DEPLOYMENT. Either way
  # requirements.txt is installed by a remote (Oryx) build on Linux.
  log "Code: deploying with remote build (package sha256 $sha)"
  az_change functionapp deployment source config-zip --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --src "$zip" --build-remote true --timeout 900 --output none
  az_change tag update --resource-id "$APP_ID" --operation Merge --tags "codeSha256=$sha" --output none
  APP_RESTARTED=1
}

APP_RESTARTED=0

# Versionless Key Vault references pick up a new secret version on their own only within 24 hours. A
# settings change or a deploy re-reads them; otherwise the deploy asks for it with the documented
# refresh call (App Service docs, "Use Key Vault references", Rotation: "POST .../config/
# configreferences/appsettings/refresh?api-version=2022-03-01" forces a refresh of all references).
apply_rotated_secrets() {
  if ((SECRETS_ROTATED && !APP_RESTARTED)); then
    log "Key Vault references: asking $APP_NAME to read the new secret versions now"
    az_change rest --method post \
      --url "$APP_ID/config/configreferences/appsettings/refresh?api-version=2022-03-01" --output none
  fi
}

FUNCTION_IDS=""
BLOBS_EXTENSION_KEY_FILE=""

functions_indexed() {
  FUNCTION_IDS="$(az functionapp function list --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "[].[name, id]" --output tsv 2>/dev/null || true)"
  grep -q "/image_deleted"$'\t' <<<"$FUNCTION_IDS" && grep -q "/image_uploaded"$'\t' <<<"$FUNCTION_IDS"
}

blobs_extension_key_ready() {
  local key
  key="$(az functionapp keys list --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "systemKeys.blobs_extension" --output tsv 2>/dev/null || true)"
  [[ -n "$key" ]] || return 1
  (umask 077 && printf '%s' "$key" >"$BLOBS_EXTENSION_KEY_FILE")
}

# Event Grid validates a subscription's endpoint when it is created, so the code must be running and
# its functions indexed first; the blob extension's system key only exists once the host has started
# with a blob trigger. Both are read from the app, never assumed.
wait_for_functions() {
  [[ "$DRY_RUN" == 1 || -n "$FUNCTION_IDS" ]] && return
  log "Waiting for the host to index the functions"
  retry "functions image_uploaded and image_deleted to be indexed" functions_indexed
}

wait_for_blobs_extension_key() {
  [[ "$DRY_RUN" == 1 || -n "$BLOBS_EXTENSION_KEY_FILE" ]] && return
  wait_for_functions
  BLOBS_EXTENSION_KEY_FILE="$TMP_DIR/blobs-extension-key"
  retry "the blobs_extension system key" blobs_extension_key_ready
}

SYSTEM_TOPIC_RG=""

ensure_system_topic() {
  local topics name source rg
  topics="$(az_read eventgrid system-topic list --query "[].[name, source, resourceGroup]" --output tsv || true)"
  # An account can have only one system topic: reuse whichever exists for it.
  while IFS=$'\t' read -r name source rg; do
    if [[ -n "$name" && "$(lower "$source")" == "$(lower "$IMAGES_ACCOUNT_ID")" ]]; then
      SYSTEM_TOPIC_NAME="$name"
      SYSTEM_TOPIC_RG="$rg"
      log "Event Grid system topic $name: exists (in $rg)"
      return
    fi
  done <<<"$topics"
  SYSTEM_TOPIC_NAME="${SYSTEM_TOPIC_NAME:-$IMAGES_STORAGE_ACCOUNT-events}"
  SYSTEM_TOPIC_RG="$IMAGES_ACCOUNT_RG"
  log "Event Grid system topic $SYSTEM_TOPIC_NAME: creating on $IMAGES_STORAGE_ACCOUNT"
  az_change eventgrid system-topic create --name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG" \
    --location "$IMAGES_ACCOUNT_LOCATION" --topic-type Microsoft.Storage.StorageAccounts \
    --source "$IMAGES_ACCOUNT_ID" --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
}

# event_subscription_state NAME DESIRED_FILE: "missing", "ok" or "differs". The subscription is read
# with its full endpoint URL (the webhook's carries the blobs_extension key, so a rotated key shows as
# a difference); the answer stays in this shell and goes to the comparison on stdin only.
event_subscription_state() {
  local current rc=0
  current="$(az_read eventgrid system-topic event-subscription show --name "$1" \
    --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG" \
    --include-full-endpoint-url true --output json 2>"$TMP_DIR/subscription-error")" || rc=$?
  case "$rc" in
    0) ;;
    3) echo missing; return ;;
    *)
      cat "$TMP_DIR/subscription-error" >&2
      die "could not read event subscription $1 (exit $rc)"
      ;;
  esac
  if python3 "$SCRIPT_DIR/azhelp.py" matches "$2" <<<"$current"; then
    echo ok
  else
    echo differs
  fi
}

ensure_event_subscriptions() {
  ensure_system_topic
  local subject="/blobServices/default/containers/$IMAGES_CONTAINER/"
  local common=(--system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG"
    --subject-begins-with "$subject" --event-delivery-schema eventgridschema --output none)
  local desired_file="$TMP_DIR/subscription-desired.json" state
  if [[ "$PLAN" == flex ]]; then
    state=missing
    if [[ "$DRY_RUN" != 1 ]]; then
      wait_for_blobs_extension_key
      local api_list
      api_list="$(printf '"%s",' "${COMMITTED_BLOB_APIS[@]}")"
      (umask 077 && printf '{"destination":{"endpointType":"WebHook","endpointUrl":"https://%s/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=%s"},"filter":{"includedEventTypes":["Microsoft.Storage.BlobCreated"],"subjectBeginsWith":"%s","advancedFilters":[{"key":"data.api","operatorType":"StringIn","values":[%s]}]},"eventDeliverySchema":"EventGridSchema"}' \
        "$APP_HOST" "$(cat "$BLOBS_EXTENSION_KEY_FILE")" "$subject" "${api_list%,}" >"$desired_file")
      state="$(event_subscription_state "$BLOB_CREATED_SUBSCRIPTION" "$desired_file")"
    fi
    if [[ "$state" == ok ]]; then
      log "Event subscription $BLOB_CREATED_SUBSCRIPTION: exists, as configured"
    else
      if [[ "$state" == differs ]]; then
        log "Event subscription $BLOB_CREATED_SUBSCRIPTION: differs (endpoint, key, container or filter): recreating"
      else
        log "Event subscription $BLOB_CREATED_SUBSCRIPTION: BlobCreated of committed blobs -> image_uploaded (blob extension webhook)"
      fi
      local endpoint_arg
      if [[ "$DRY_RUN" == 1 ]]; then
        endpoint_arg="https://$APP_HOST/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=<blobs_extension system key>"
      else
        # The URL carries the system key: az reads it from a private file ('@file' argument), so
        # the key stays out of the process list.
        local endpoint_file="$TMP_DIR/blob-created-endpoint"
        (umask 077 && printf 'https://%s/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=%s' \
          "$APP_HOST" "$(cat "$BLOBS_EXTENSION_KEY_FILE")" >"$endpoint_file")
        endpoint_arg="@$endpoint_file"
      fi
      az_change eventgrid system-topic event-subscription create --name "$BLOB_CREATED_SUBSCRIPTION" \
        --endpoint-type webhook --endpoint "$endpoint_arg" \
        --included-event-types Microsoft.Storage.BlobCreated \
        --advanced-filter data.api StringIn "${COMMITTED_BLOB_APIS[@]}" "${common[@]}"
    fi
  else
    note "plan $PLAN: no BlobCreated subscription (image_uploaded polls: BLOB_TRIGGER_SOURCE=LogsAndContainerScan)"
  fi
  local function_id="$APP_ID/functions/image_deleted"
  state=missing
  if [[ "$DRY_RUN" != 1 ]]; then
    printf '{"destination":{"endpointType":"AzureFunction","resourceId":"%s"},"filter":{"includedEventTypes":["Microsoft.Storage.BlobDeleted"],"subjectBeginsWith":"%s"},"eventDeliverySchema":"EventGridSchema"}' \
      "$function_id" "$subject" >"$desired_file"
    state="$(event_subscription_state "$BLOB_DELETED_SUBSCRIPTION" "$desired_file")"
  fi
  if [[ "$state" == ok ]]; then
    log "Event subscription $BLOB_DELETED_SUBSCRIPTION: exists, as configured"
    return
  fi
  wait_for_functions
  if [[ "$DRY_RUN" != 1 ]]; then
    function_id="$(awk -F'\t' '$1 ~ /\/image_deleted$/ { print $2 }' <<<"$FUNCTION_IDS")"
  fi
  if [[ "$state" == differs ]]; then
    log "Event subscription $BLOB_DELETED_SUBSCRIPTION: differs (endpoint or container): recreating"
  else
    log "Event subscription $BLOB_DELETED_SUBSCRIPTION: BlobDeleted -> image_deleted (Azure Function endpoint)"
  fi
  az_change eventgrid system-topic event-subscription create --name "$BLOB_DELETED_SUBSCRIPTION" \
    --endpoint-type azurefunction --endpoint "$function_id" \
    --included-event-types Microsoft.Storage.BlobDeleted "${common[@]}"
}

print_summary() {
  local images_origin="resource group $IMAGES_ACCOUNT_RG"
  if ((IMAGES_ACCOUNT_CREATED)); then
    images_origin+=", created by this deploy"
  fi
  local alerts="none (set ALERT_EMAIL or ALERT_ACTION_GROUP_ID)"
  if alerts_enabled; then
    alerts="${ALERT_RULE_NAMES[*]}, notifying ${ALERT_EMAIL:-action group ${ALERT_ACTION_GROUP_ID##*/}}"
  fi
  cat <<EOF

Deployed $APP_NAME ($PLAN plan, HTTPS only) in resource group $RESOURCE_GROUP.
  Function app:      https://$APP_HOST
  Images:            $IMAGES_STORAGE_ACCOUNT/$IMAGES_CONTAINER ($images_origin)
  App containers:    ${APP_CONTAINERS[*]} (on $IMAGES_STORAGE_ACCOUNT)
  Queues:            ${QUEUES[*]} (on $IMAGES_STORAGE_ACCOUNT)
  Host storage:      $HOST_STORAGE_ACCOUNT
  Key Vault:         $KEY_VAULT_NAME (secrets WALLIE-PASSWORD, TRAEDE-ACCESS-TOKEN, TRAEDE-APP-KEY)
  Logs:              Application Insights $APP_INSIGHTS_NAME (workspace $LOG_WORKSPACE_NAME)
  Alerts:            $alerts
  Event Grid topic:  $SYSTEM_TOPIC_NAME (resource group $SYSTEM_TOPIC_RG)
  Blob trigger:      $BLOB_TRIGGER_SOURCE
  Nightly sync:      $SYNC_SCHEDULE (UTC, NCRONTAB)

The blob trigger only sees new uploads: images already in the container reach the partners with the
nightly full sync. To run the first full sync now, start the nightly_sync timer function by hand
through the host's admin API with the master key (HTTP 202 means it started; follow it in
Application Insights $APP_INSIGHTS_NAME):

  curl -fsS -X POST "https://$APP_HOST/admin/functions/nightly_sync" \\
    -H "x-functions-key: \$(az functionapp keys list -g $RESOURCE_GROUP -n $APP_NAME --query masterKey -o tsv)" \\
    -H "Content-Type: application/json" -d '{}'
EOF
}

cleanup() {
  if [[ -n "$TMP_DIR" && -d "$TMP_DIR" ]]; then
    rm -rf "$TMP_DIR"
  fi
}

main() {
  parse_args "$@"
  load_config
  exec 3>&1
  TMP_DIR="$(mktemp -d)"
  chmod 700 "$TMP_DIR"
  trap cleanup EXIT
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run: printing the commands a fresh deployment would run (as if nothing existed yet)"
  fi
  preflight
  ensure_providers
  ensure_resource_group
  ensure_host_storage
  ensure_images_account
  ensure_containers_and_queues
  ensure_key_vault
  ensure_secrets
  ensure_monitoring
  ensure_function_app
  ensure_identity
  ensure_app_roles
  ensure_app_settings
  ensure_code
  apply_rotated_secrets
  ensure_event_subscriptions
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run done: nothing was changed"
  else
    print_summary
  fi
}

main "$@"
