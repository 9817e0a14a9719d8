#!/usr/bin/env bash
# Deploy the image sync Functions app with the Azure CLI, from nothing to running. Idempotent: every
# step checks what exists first, so a second run changes nothing. See deploy/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"

usage() {
  cat <<'EOF'
Usage: deploy/deploy.sh [--env-file PATH] [options]

Creates or updates, in order: resource group; host storage account; images storage account (reused
if it exists, never reconfigured), its container and queues; Key Vault (RBAC) and the partner
secrets; the function app (Flex Consumption by default) with a system-assigned identity; role
assignments; app settings (secrets as Key Vault references); the code (zip of the project, remote
build); and, once the code runs, the Event Grid subscriptions. Each step is skipped when already done.

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
  --project-dir PATH           Functions project to package (default: the repository root)
                               [PROJECT_DIR]
  --force-code-deploy          upload the code even if the app already runs the same package
  --dry-run                    print the az commands that would change something, run nothing
                               (assumes nothing exists yet; values Azure would return show as <...>)
  -h, --help                   this help

Secrets are read from the environment only: WALLIE_PASSWORD, TRAEDE_ACCESS_TOKEN, TRAEDE_APP_KEY.
They go to Key Vault through a temporary file (az keyvault secret set --file), never on a command
line. Leave one unset to keep the value already in the vault.

Needs: az (logged in; Owner or Contributor + User Access Administrator on the resource group and on
the images account), python3, bash 4+.
EOF
}

FORCE_CODE_DEPLOY=0

parse_args() {
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      -l | --location) FLAGS[LOCATION]="${2:?$1 needs a value}"; shift 2 ;;
      --plan) FLAGS[PLAN]="${2:?$1 needs a value}"; shift 2 ;;
      --container) FLAGS[IMAGES_CONTAINER]="${2:?$1 needs a value}"; shift 2 ;;
      --host-storage-account) FLAGS[HOST_STORAGE_ACCOUNT]="${2:?$1 needs a value}"; shift 2 ;;
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

load_config() {
  load_env_and_flags
  apply_common_defaults
  PROJECT_DIR="${PROJECT_DIR:-$(cd "$SCRIPT_DIR/.." && pwd)}"
  FLEX_INSTANCE_MEMORY="${FLEX_INSTANCE_MEMORY:-2048}"
  PREMIUM_SKU="${PREMIUM_SKU:-EP1}"
  # App settings with the contract's defaults.
  SAS_TTL_HOURS="${SAS_TTL_HOURS:-48}"
  SAS_START_SKEW_MINUTES="${SAS_START_SKEW_MINUTES:-15}"
  WALLIE_BATCH_SIZE="${WALLIE_BATCH_SIZE:-500}"
  TRAEDE_PAYLOAD_KEY="${TRAEDE_PAYLOAD_KEY:-products}"
  TRAEDE_COLOR_ATTRIBUTE="${TRAEDE_COLOR_ATTRIBUTE:-Color}"
  HTTP_TIMEOUT_SECONDS="${HTTP_TIMEOUT_SECONDS:-30}"
  HTTP_MAX_RETRIES="${HTTP_MAX_RETRIES:-5}"
  HTTP_RETRY_BACKOFF_SECONDS="${HTTP_RETRY_BACKOFF_SECONDS:-0.5}"
  HTTP_RETRY_MAX_SECONDS="${HTTP_RETRY_MAX_SECONDS:-120}"
  SYNC_CONCURRENCY="${SYNC_CONCURRENCY:-4}"
  SYNC_SCHEDULE="${SYNC_SCHEDULE:-0 0 2 * * *}"
  SYNC_SHARD_PRODUCTS="${SYNC_SHARD_PRODUCTS:-2000}"
  PRODUCT_SYNC_QUEUE="${PRODUCT_SYNC_QUEUE:-image-sync-products}"
  PRODUCT_SYNC_DELAY_SECONDS="${PRODUCT_SYNC_DELAY_SECONDS:-10}"
  PRODUCT_LOCK_SECONDS="${PRODUCT_LOCK_SECONDS:-60}"
  SYNC_STATE_CONTAINER="${SYNC_STATE_CONTAINER:-image-sync-state}"
  LOG_LEVEL="${LOG_LEVEL:-INFO}"
  IMAGE_PATH_PATTERN="${IMAGE_PATH_PATTERN:-}"
  if [[ "$PLAN" == flex ]]; then
    BLOB_TRIGGER_SOURCE="EventGrid"
  else
    BLOB_TRIGGER_SOURCE="LogsAndContainerScan"
  fi
  require_vars RESOURCE_GROUP LOCATION APP_NAME IMAGES_STORAGE_ACCOUNT \
    WALLIE_BASE_URL WALLIE_TENANT WALLIE_USERNAME TRAEDE_BASE_URL
  validate_names
}

# ---------------------------------------------------------------------------------------------------
# Steps. Each reads what exists and creates only what is missing.

SUBSCRIPTION_ID=""
DEPLOYER_ID=""
DEPLOYER_TYPE=""
TMP_DIR=""

preflight() {
  command -v az >/dev/null || die "the Azure CLI (az) is not installed: https://aka.ms/azcli"
  command -v python3 >/dev/null || die "python3 is needed to build the package"
  if [[ "$DRY_RUN" == 1 ]]; then
    SUBSCRIPTION_ID="<subscription-id>"
    DEPLOYER_ID="<your-object-id>"
    DEPLOYER_TYPE="User"
    return
  fi
  local account
  account="$(az account show --query "[id, user.type, user.name]" --output tsv)" \
    || die "not logged in: run 'az login' (and 'az account set --subscription ...')"
  SUBSCRIPTION_ID="$(sed -n 1p <<<"$account")"
  local user_type user_name
  user_type="$(sed -n 2p <<<"$account")"
  user_name="$(sed -n 3p <<<"$account")"
  if [[ "$user_type" == servicePrincipal ]]; then
    DEPLOYER_TYPE="ServicePrincipal"
    DEPLOYER_ID="$(az ad sp show --id "$user_name" --query id --output tsv)"
  else
    DEPLOYER_TYPE="User"
    DEPLOYER_ID="$(az ad signed-in-user show --query id --output tsv)"
  fi
  [[ -n "$DEPLOYER_ID" ]] || die "could not find the signed-in principal's object id"
  log "Subscription $SUBSCRIPTION_ID, deploying as $user_name"
}

ensure_providers() {
  local namespace state
  for namespace in Microsoft.Web Microsoft.Storage Microsoft.KeyVault Microsoft.EventGrid Microsoft.Insights; do
    state="$(az_read provider show --namespace "$namespace" --query registrationState --output tsv || true)"
    if [[ "$state" != Registered ]]; then
      log "Registering resource provider $namespace"
      az_change provider register --namespace "$namespace" --wait
    fi
  done
}

ensure_resource_group() {
  if resource_exists group show --name "$RESOURCE_GROUP"; then
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
  local found
  found="$(find_images_account)"
  if [[ -n "$found" ]]; then
    IFS=$'\t' read -r IMAGES_ACCOUNT_ID IMAGES_ACCOUNT_RG IMAGES_ACCOUNT_LOCATION <<<"$found"
    log "Images storage account $IMAGES_STORAGE_ACCOUNT: exists in $IMAGES_ACCOUNT_RG, reused as it is"
    warn_if_not_reachable
  else
    if [[ -n "${IMAGES_RESOURCE_GROUP:-}" && "$IMAGES_RESOURCE_GROUP" != "$RESOURCE_GROUP" ]]; then
      die "storage account $IMAGES_STORAGE_ACCOUNT not found in $IMAGES_RESOURCE_GROUP (leave IMAGES_RESOURCE_GROUP unset to create it in $RESOURCE_GROUP)"
    fi
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
  local endpoints
  if endpoints="$(az_read storage account show --ids "$IMAGES_ACCOUNT_ID" \
    --query "[primaryEndpoints.blob, primaryEndpoints.queue]" --output tsv)"; then
    BLOB_SERVICE_URI="$(sed -n 1p <<<"$endpoints")"
    QUEUE_SERVICE_URI="$(sed -n 2p <<<"$endpoints")"
  else
    BLOB_SERVICE_URI="https://$IMAGES_STORAGE_ACCOUNT.blob.core.windows.net/"
    QUEUE_SERVICE_URI="https://$IMAGES_STORAGE_ACCOUNT.queue.core.windows.net/"
  fi
  BLOB_SERVICE_URI="${BLOB_SERVICE_URI%/}"
  QUEUE_SERVICE_URI="${QUEUE_SERVICE_URI%/}"
}

# The partners download the images themselves over the internet: a firewalled account breaks that.
# The deploy never changes an existing account's network rules; it only says so.
warn_if_not_reachable() {
  local access
  access="$(az_read storage account show --ids "$IMAGES_ACCOUNT_ID" \
    --query "[publicNetworkAccess, networkRuleSet.defaultAction]" --output tsv || true)"
  if grep -qx -e Disabled -e Deny <<<"$access"; then
    warn "storage account $IMAGES_STORAGE_ACCOUNT is not reachable from the internet (public access disabled or firewall default Deny)."
    warn "Wallie and TRAEDE download the images by SAS URL from Azure's public IP range: they will fail until the account allows that. The deploy does not change network rules."
  fi
}

ensure_container_and_queues() {
  local exists
  exists="$(az_read storage container-rm exists --storage-account "$IMAGES_ACCOUNT_ID" \
    --name "$IMAGES_CONTAINER" --query exists --output tsv || true)"
  if [[ "$exists" == true ]]; then
    log "Container $IMAGES_CONTAINER: exists"
  else
    log "Container $IMAGES_CONTAINER: creating (private)"
    az_change storage container-rm create --storage-account "$IMAGES_ACCOUNT_ID" \
      --name "$IMAGES_CONTAINER" --public-access off --output none
  fi
  # Through Azure Resource Manager rather than the queue endpoint, so neither the account's firewall
  # nor data-plane roles of the person deploying matter.
  local queue queue_id
  for queue in "${QUEUES[@]}"; do
    queue_id="$IMAGES_ACCOUNT_ID/queueServices/default/queues/$queue"
    if resource_exists resource show --ids "$queue_id" --api-version "$STORAGE_API_VERSION"; then
      log "Queue $queue: exists"
    else
      log "Queue $queue: creating"
      az_change resource create --id "$queue_id" --api-version "$STORAGE_API_VERSION" \
        --properties '{}' --output none
    fi
  done
}

STORAGE_API_VERSION="2023-05-01"
QUEUES=()

KEY_VAULT_ID=""
KEY_VAULT_URI=""

ensure_key_vault() {
  if resource_exists keyvault show --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP"; then
    log "Key Vault $KEY_VAULT_NAME: exists"
  else
    local deleted
    deleted="$(az_read keyvault list-deleted --resource-type vault \
      --query "[?name=='$KEY_VAULT_NAME'].name" --output tsv || true)"
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
    --query "[].id" --output tsv || true)"
  if [[ -n "$existing" ]]; then
    note "role '$role' on ${scope##*/providers/}: assigned"
    return
  fi
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

APP_ID=""
APP_HOST=""

ensure_function_app() {
  if resource_exists functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP"; then
    log "Function app $APP_NAME: exists"
  else
    local common=(--name "$APP_NAME" --resource-group "$RESOURCE_GROUP"
      --storage-account "$HOST_STORAGE_ACCOUNT" --runtime python --runtime-version 3.11
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
  if [[ "$DRY_RUN" == 1 ]]; then
    APP_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Web/sites/$APP_NAME"
    APP_HOST="<default host name of $APP_NAME>"
    return
  fi
  local app
  app="$(az functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "[id, defaultHostName]" --output tsv)"
  APP_ID="$(sed -n 1p <<<"$app")"
  APP_HOST="$(sed -n 2p <<<"$app")"
}

APP_PRINCIPAL_ID=""

ensure_identity() {
  APP_PRINCIPAL_ID="$(az_read functionapp identity show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query principalId --output tsv || true)"
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

ensure_app_roles() {
  log "Role assignments for the app's identity"
  local container_scope="$IMAGES_ACCOUNT_ID/blobServices/default/containers/$IMAGES_CONTAINER"
  # Event Grid delivers blob events, so reading the one container is enough. The polling trigger
  # (consumption/premium) also reads the account's $logs container, so it needs the account.
  local reader_scope="$container_scope"
  if [[ "$PLAN" != flex ]]; then
    reader_scope="$IMAGES_ACCOUNT_ID"
  fi
  ensure_role "$APP_PRINCIPAL_ID" ServicePrincipal "Storage Blob Data Reader" "$reader_scope"
  # User-delegation keys are requested from the blob service, an account-level operation.
  ensure_role "$APP_PRINCIPAL_ID" ServicePrincipal "Storage Blob Delegator" "$IMAGES_ACCOUNT_ID"
  local queue
  for queue in "${QUEUES[@]}"; do
    ensure_role "$APP_PRINCIPAL_ID" ServicePrincipal "Storage Queue Data Contributor" \
      "$IMAGES_ACCOUNT_ID/queueServices/default/queues/$queue"
  done
  ensure_role "$APP_PRINCIPAL_ID" ServicePrincipal "Key Vault Secrets User" "$KEY_VAULT_ID"
}

kv_reference() {
  printf '@Microsoft.KeyVault(SecretUri=%ssecrets/%s/)' "$KEY_VAULT_URI" "$1"
}

ensure_app_settings() {
  local desired=(
    "IMAGES_STORAGE__blobServiceUri=$BLOB_SERVICE_URI"
    "IMAGES_STORAGE__queueServiceUri=$QUEUE_SERVICE_URI"
    "IMAGES_CONTAINER=$IMAGES_CONTAINER"
    "SAS_TTL_HOURS=$SAS_TTL_HOURS"
    "SAS_START_SKEW_MINUTES=$SAS_START_SKEW_MINUTES"
    "WALLIE_BASE_URL=$WALLIE_BASE_URL"
    "WALLIE_TENANT=$WALLIE_TENANT"
    "WALLIE_USERNAME=$WALLIE_USERNAME"
    "WALLIE_PASSWORD=$(kv_reference WALLIE-PASSWORD)"
    "WALLIE_BATCH_SIZE=$WALLIE_BATCH_SIZE"
    "TRAEDE_BASE_URL=$TRAEDE_BASE_URL"
    "TRAEDE_ACCESS_TOKEN=$(kv_reference TRAEDE-ACCESS-TOKEN)"
    "TRAEDE_APP_KEY=$(kv_reference TRAEDE-APP-KEY)"
    "TRAEDE_PAYLOAD_KEY=$TRAEDE_PAYLOAD_KEY"
    "TRAEDE_COLOR_ATTRIBUTE=$TRAEDE_COLOR_ATTRIBUTE"
    "HTTP_TIMEOUT_SECONDS=$HTTP_TIMEOUT_SECONDS"
    "HTTP_MAX_RETRIES=$HTTP_MAX_RETRIES"
    "HTTP_RETRY_BACKOFF_SECONDS=$HTTP_RETRY_BACKOFF_SECONDS"
    "HTTP_RETRY_MAX_SECONDS=$HTTP_RETRY_MAX_SECONDS"
    "SYNC_CONCURRENCY=$SYNC_CONCURRENCY"
    "SYNC_SCHEDULE=$SYNC_SCHEDULE"
    "BLOB_TRIGGER_SOURCE=$BLOB_TRIGGER_SOURCE"
    "SYNC_SHARD_PRODUCTS=$SYNC_SHARD_PRODUCTS"
    "SYNC_SHARD_QUEUE=$SYNC_SHARD_QUEUE"
    "PRODUCT_SYNC_QUEUE=$PRODUCT_SYNC_QUEUE"
    "PRODUCT_SYNC_DELAY_SECONDS=$PRODUCT_SYNC_DELAY_SECONDS"
    "PRODUCT_LOCK_SECONDS=$PRODUCT_LOCK_SECONDS"
    "SYNC_STATE_CONTAINER=$SYNC_STATE_CONTAINER"
    "LOG_LEVEL=$LOG_LEVEL"
  )
  if [[ -n "$IMAGE_PATH_PATTERN" ]]; then
    desired+=("IMAGE_PATH_PATTERN=$IMAGE_PATH_PATTERN")
  fi
  # Only changed settings are written: every write restarts the app.
  declare -A current=()
  local name value
  if [[ "$DRY_RUN" != 1 ]]; then
    while IFS=$'\t' read -r name value; do
      [[ -n "$name" ]] && current["$name"]="$value"
    done < <(az functionapp config appsettings list --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --query "[].[name, value]" --output tsv)
  fi
  local changed=() setting
  for setting in "${desired[@]}"; do
    name="${setting%%=*}"
    value="${setting#*=}"
    if [[ -z "${current[$name]+set}" || "${current[$name]}" != "$value" ]]; then
      changed+=("$setting")
    fi
  done
  if ((${#changed[@]} == 0)); then
    log "App settings: up to date"
    return
  fi
  log "App settings: writing ${#changed[@]} (${changed[*]%%=*})"
  APP_RESTARTED=1
  az_change functionapp config appsettings set --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --settings "${changed[@]}" --output none
}

ensure_code() {
  local zip="${DEPLOY_BUILD_DIR:-$SCRIPT_DIR/.build}/$APP_NAME.zip" line sha
  log "Package: building from $PROJECT_DIR (honouring its .funcignore)"
  line="$(python3 "$SCRIPT_DIR/package.py" "$PROJECT_DIR" "$zip")"
  sha="${line%% *}"
  local deployed=""
  deployed="$(az_read functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "tags.codeSha256" --output tsv || true)"
  if [[ "$deployed" == "$sha" && "$FORCE_CODE_DEPLOY" != 1 ]]; then
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

# Versionless Key Vault references pick up a new secret version on their own only within 24 hours;
# a restart (or any settings change, or a deploy) makes the app read it now.
apply_rotated_secrets() {
  if ((SECRETS_ROTATED && !APP_RESTARTED)); then
    log "Restarting $APP_NAME so it reads the new secret versions now"
    az_change functionapp restart --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" --output none
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
# with a blob trigger. Both are read from the app, never assumed, and only when a subscription is
# about to be created.
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

ensure_event_subscriptions() {
  ensure_system_topic
  local subject="/blobServices/default/containers/$IMAGES_CONTAINER/"
  local filter=(--subject-begins-with "$subject" --event-delivery-schema eventgridschema)
  if [[ "$PLAN" == flex ]]; then
    if resource_exists eventgrid system-topic event-subscription show --name "$BLOB_CREATED_SUBSCRIPTION" \
      --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG"; then
      log "Event subscription $BLOB_CREATED_SUBSCRIPTION: exists"
    else
      log "Event subscription $BLOB_CREATED_SUBSCRIPTION: BlobCreated -> image_uploaded (blob extension webhook)"
      wait_for_blobs_extension_key
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
        --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG" \
        --endpoint-type webhook --endpoint "$endpoint_arg" \
        --included-event-types Microsoft.Storage.BlobCreated "${filter[@]}" --output none
    fi
  else
    note "plan $PLAN: no BlobCreated subscription (image_uploaded polls: BLOB_TRIGGER_SOURCE=LogsAndContainerScan)"
  fi
  if resource_exists eventgrid system-topic event-subscription show --name "$BLOB_DELETED_SUBSCRIPTION" \
    --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG"; then
    log "Event subscription $BLOB_DELETED_SUBSCRIPTION: exists"
  else
    wait_for_functions
    local function_id="$APP_ID/functions/image_deleted"
    if [[ "$DRY_RUN" != 1 ]]; then
      function_id="$(awk -F'\t' '$1 ~ /\/image_deleted$/ { print $2 }' <<<"$FUNCTION_IDS")"
    fi
    log "Event subscription $BLOB_DELETED_SUBSCRIPTION: BlobDeleted -> image_deleted (Azure Function endpoint)"
    az_change eventgrid system-topic event-subscription create --name "$BLOB_DELETED_SUBSCRIPTION" \
      --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG" \
      --endpoint-type azurefunction --endpoint "$function_id" \
      --included-event-types Microsoft.Storage.BlobDeleted "${filter[@]}" --output none
  fi
}

print_summary() {
  local images_origin="resource group $IMAGES_ACCOUNT_RG"
  if ((IMAGES_ACCOUNT_CREATED)); then
    images_origin+=", created by this deploy"
  fi
  cat <<EOF

Deployed $APP_NAME ($PLAN plan) in resource group $RESOURCE_GROUP.
  Function app:      https://$APP_HOST
  Images:            $IMAGES_STORAGE_ACCOUNT/$IMAGES_CONTAINER ($images_origin)
  Queues:            ${QUEUES[*]} (on $IMAGES_STORAGE_ACCOUNT)
  Host storage:      $HOST_STORAGE_ACCOUNT
  Key Vault:         $KEY_VAULT_NAME (secrets WALLIE-PASSWORD, TRAEDE-ACCESS-TOKEN, TRAEDE-APP-KEY)
  Event Grid topic:  $SYSTEM_TOPIC_NAME (resource group $SYSTEM_TOPIC_RG)
  Blob trigger:      $BLOB_TRIGGER_SOURCE
  Nightly sync:      $SYNC_SCHEDULE (UTC, NCRONTAB)

The blob trigger only sees new uploads: images already in the container reach the partners with the
nightly full sync. To run the first full sync now, start the nightly_sync timer function by hand
through the host's admin API with the master key (HTTP 202 means it started; follow it in
Application Insights):

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
  QUEUES=("$SYNC_SHARD_QUEUE" "$SYNC_SHARD_QUEUE-poison" "$PRODUCT_SYNC_QUEUE" "$PRODUCT_SYNC_QUEUE-poison"
    "webjobs-blobtrigger-poison")
  TMP_DIR="$(mktemp -d)"
  chmod 700 "$TMP_DIR"
  trap cleanup EXIT
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run: printing the commands that would change something (as if nothing existed yet)"
  fi
  preflight
  ensure_providers
  ensure_resource_group
  ensure_host_storage
  ensure_images_account
  ensure_container_and_queues
  ensure_key_vault
  ensure_secrets
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
