#!/usr/bin/env bash
# Deploy the image sync Functions app with the Azure CLI, from nothing to running. Idempotent: every
# step compares what exists with what it should be, so a second run changes nothing and a run after a
# hand-made change puts it right; --plan shows what a run would do without doing it. See docs/deploy.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"
# shellcheck source-path=SCRIPTDIR source=outcome.sh
source "$SCRIPT_DIR/outcome.sh"
# The steps by concern; main (at the end) runs them in order.
# shellcheck source-path=SCRIPTDIR source=preflight.sh
source "$SCRIPT_DIR/preflight.sh"
# shellcheck source-path=SCRIPTDIR source=key_vault.sh
source "$SCRIPT_DIR/key_vault.sh"
# shellcheck source-path=SCRIPTDIR source=roles.sh
source "$SCRIPT_DIR/roles.sh"
# shellcheck source-path=SCRIPTDIR source=azure_monitor.sh
source "$SCRIPT_DIR/azure_monitor.sh"
# shellcheck source-path=SCRIPTDIR source=event_grid.sh
source "$SCRIPT_DIR/event_grid.sh"

usage() {
  cat <<EOF
Usage: deploy/deploy.sh [--env-file PATH] [options]

Checks first (Azure CLI $AZ_MIN_VERSION or newer, logged in, the rights this run needs, and that an
existing images or host storage account is of a kind the app can use) and stops before changing
anything if something is missing. Then creates or updates, in order: resource group; host storage
account; images storage account (reused if it exists, never reconfigured), its containers and queues;
Key Vault (RBAC) and the partner secrets; Log Analytics workspace and Application Insights; action group
and alert rules (with --alert-email or --alert-action-group); the function app (Flex Consumption by
default, HTTPS only) with a system-assigned identity; its role assignments; app settings (secrets as Key
Vault references, host storage through the identity); the code (zip of the project, remote build); the
Event Grid subscriptions; and last it has the app re-read its Key Vault references and waits until each
one resolves. What already is as it should be is left alone; what differs is put right.

Options (each also settable in the env file or the environment under the name in brackets;
flags win over the environment, which wins over the env file):
  --env-file PATH              KEY=VALUE settings, see deploy/deploy.env.example
  -g, --resource-group NAME    resource group for everything the deploy creates [RESOURCE_GROUP]
  -l, --location REGION        Azure region, e.g. westeurope [LOCATION]
  -n, --app-name NAME          function app name, globally unique [APP_NAME]
  --hosting-plan flex|consumption|premium
                               hosting plan (default flex) [HOSTING_PLAN]. Every plan uses the Event
                               Grid blob trigger. consumption is classic Linux Consumption, which
                               retires on 30 September 2028 and keeps an account key for its host
  --python-version 3.11|3.12   Python of the app (default 3.11, supported on Functions until October
                               2027; 3.12 until October 2028, and the last on Linux Consumption)
                               [PYTHON_VERSION]
  --images-account NAME        storage account holding the images; created if missing
                               [IMAGES_STORAGE_ACCOUNT]
  --images-resource-group NAME where the existing images account is (default: searched in the
                               subscription) [IMAGES_RESOURCE_GROUP]
  --container NAME             images container (default product-images) [IMAGES_CONTAINER]
  --images-data-role custom|owner
                               the app's role on the images container (default custom: a role the
                               deploy defines that reads images and reads and writes their index
                               tags, nothing more; defining it needs roleDefinitions/write). owner:
                               the built-in Storage Blob Data Owner, which also lets the app write,
                               delete and re-permission every image [IMAGES_DATA_ROLE]
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
  --plan                       read the subscription and print, per resource, what a deploy would
                               create, change (setting by setting, secret values hidden), delete or
                               leave alone; change nothing (needs az and read access)
  --dry-run                    print the az commands a fresh deployment would run, run nothing (no
                               az needed; values Azure would return show as <...>)
  -h, --help                   this help

Secrets are read from the environment only: WALLIE_PASSWORD, TRAEDE_ACCESS_TOKEN, TRAEDE_APP_KEY.
They go to Key Vault through a temporary file (az keyvault secret set --file); no key or secret is ever
on a command line the deploy runs. Leave one unset to keep the value already in the vault.

BLOB_TRIGGER_SOURCE=LogsAndContainerScan (env file or environment; consumption and premium only) opts
into the polling blob trigger instead of Event Grid: it runs image_uploaded once for every blob already
in the container. See docs/deploy.md before using it.

Needs: Azure CLI $AZ_MIN_VERSION or newer (logged in), python3, bash 4.4+, and the rights listed under
"Permissions" in docs/deploy.md (checked before anything is changed).
EOF
}

# The app settings taken from deploy.env, with their defaults: one line each, so that adding a setting
# to the deploy is one line here (and one in deploy.env.example). An empty default means the app's own
# default applies: while such a setting is unset it is removed from the app, so clearing it in
# deploy.env takes effect. WALLIE_/TRAEDE_ base URLs, tenant and user are required (load_config).
# The settings the deploy computes (storage endpoints, host storage, queue and container names, Key
# Vault references, trigger source, Application Insights) are in desired_app_settings.
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
  "WEB_IMAGES=convert"
  "WEB_FORMATS=jpeg,png,gif,webp"
  "WEB_MAX_SIDE=6000"
  "WEB_MAX_MEGABYTES=20"
  "RENDITION_FORMAT=jpeg"
  "RENDITION_MAX_SIDE=3000"
  "RENDITION_QUALITY=85"
  "RENDITION_BUDGET_IMAGES=500"
  "RENDITION_BUDGET_MEGABYTES=2048"
  "RENDITION_BUDGET_SECONDS=120"
)
APP_SETTING_NAMES=("${APP_SETTINGS[@]%%=*}")

# Resource providers the deployment uses (registered once per subscription).
PROVIDERS=(Microsoft.Web Microsoft.Storage Microsoft.KeyVault Microsoft.EventGrid Microsoft.Insights
  Microsoft.OperationalInsights)

# Roles the deploy gives the app's identity on the images account and the vault; an assignment of one of
# these to the identity there that the deploy no longer wants is removed (e.g. after a container rename,
# or the polling trigger's Storage Blob Data Owner once the app is on Event Grid).
MANAGED_APP_ROLES=("Storage Blob Data Reader" "Storage Blob Data Contributor" "Storage Blob Data Owner"
  "Storage Blob Delegator" "Storage Queue Data Contributor" "Key Vault Secrets User")

# What the Functions host needs on its own storage account when it reaches it with the app's identity
# (Microsoft's "Connecting to host storage with an identity"): Storage Blob Data Owner for the host itself
# (keys, timer locks) and, for a blob trigger, Storage Queue Data Contributor and Storage Account
# Contributor as well ("the blob trigger internally uses Azure Queues and writes blob receipts ... using
# the AzureWebJobsStorage connection, regardless of the connection configured for the trigger"); Storage
# Table Data Contributor lets the host record its diagnostic events. Blob Data Owner also covers the
# Flex Consumption deployment container on the same account.
HOST_ROLES=("Storage Blob Data Owner" "Storage Queue Data Contributor" "Storage Account Contributor"
  "Storage Table Data Contributor")

# The settings whose Key Vault references must resolve.
SECRET_SETTINGS=(WALLIE_PASSWORD TRAEDE_ACCESS_TOKEN TRAEDE_APP_KEY)

FORCE_CODE_DEPLOY=0

parse_args() {
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      -l | --location) FLAGS[LOCATION]="${2:?$1 needs a value}"; shift 2 ;;
      --hosting-plan) FLAGS[HOSTING_PLAN]="${2:?$1 needs a value}"; shift 2 ;;
      --python-version) FLAGS[PYTHON_VERSION]="${2:?$1 needs a value}"; shift 2 ;;
      --plan)
        case "${2:-}" in
          flex | consumption | premium)
            die "--plan now previews what a deploy would do; the hosting plan is --hosting-plan $2"
            ;;
        esac
        PLAN_MODE=1
        shift
        ;;
      --container) FLAGS[IMAGES_CONTAINER]="${2:?$1 needs a value}"; shift 2 ;;
      --images-data-role) FLAGS[IMAGES_DATA_ROLE]="${2:?$1 needs a value}"; shift 2 ;;
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
  if ((PLAN_MODE)) && [[ "$DRY_RUN" == 1 ]]; then
    die "--plan reads the subscription and --dry-run reads nothing: choose one"
  fi
}

ALERT_EMAILS=()

load_config() {
  load_env_and_flags
  apply_common_defaults
  PROJECT_DIR="${PROJECT_DIR:-$(cd "$SCRIPT_DIR/.." && pwd)}"
  FLEX_INSTANCE_MEMORY="${FLEX_INSTANCE_MEMORY:-2048}"
  PREMIUM_SKU="${PREMIUM_SKU:-EP1}"
  PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
  BLOB_TRIGGER_SOURCE="${BLOB_TRIGGER_SOURCE:-EventGrid}"
  IMAGES_DATA_ROLE="${IMAGES_DATA_ROLE:-custom}"
  local entry name
  for entry in "${APP_SETTINGS[@]}"; do
    name="${entry%%=*}"
    if [[ -z "${!name:-}" ]]; then
      printf -v "$name" '%s' "${entry#*=}"
    fi
  done
  require_vars RESOURCE_GROUP LOCATION APP_NAME IMAGES_STORAGE_ACCOUNT \
    WALLIE_BASE_URL WALLIE_TENANT WALLIE_USERNAME TRAEDE_BASE_URL
  validate_names
  # Python versions on Functions ("Supported languages"): 3.11 until October 2027, 3.12 until October
  # 2028, and 3.12 is the last one Linux Consumption gets. The app is built and tested on 3.11.
  case "$PYTHON_VERSION" in
    3.11 | 3.12) ;;
    *) die "PYTHON_VERSION '$PYTHON_VERSION': 3.11 or 3.12" ;;
  esac
  case "$BLOB_TRIGGER_SOURCE" in
    EventGrid) ;;
    LogsAndContainerScan)
      [[ "$HOSTING_PLAN" != flex ]] \
        || die "BLOB_TRIGGER_SOURCE=LogsAndContainerScan: Flex Consumption supports only the Event Grid blob trigger"
      ;;
    *) die "BLOB_TRIGGER_SOURCE '$BLOB_TRIGGER_SOURCE': EventGrid (the default) or LogsAndContainerScan" ;;
  esac
  case "$IMAGES_DATA_ROLE" in
    custom | owner) ;;
    *) die "IMAGES_DATA_ROLE '$IMAGES_DATA_ROLE': custom (the default: a role that reads images and their tags) or owner (the built-in Storage Blob Data Owner, broader)" ;;
  esac
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

# The host reaches its storage account with the app's identity (AzureWebJobsStorage__accountName) on
# Flex Consumption and Elastic Premium. Linux Consumption cannot: its remote build stores the package
# through AzureWebJobsStorage, which the Azure CLI's zip deploy then requires as a connection string
# (Microsoft's "Connecting to host storage with an identity": "AzureWebJobsStorage is used for deployment
# artifacts when using server-side build in Linux Consumption").
host_storage_by_identity() {
  [[ "$HOSTING_PLAN" != consumption ]]
}

# Things to know about the chosen plan and options, said before anything happens.
say_plan_caveats() {
  if [[ "$HOSTING_PLAN" == consumption ]]; then
    warn "hosting plan consumption: Linux Consumption retires on 30 September 2028 and gets no new features or Python versions (3.12 is its last); its host keeps an account key in AzureWebJobsStorage, because its remote build needs one. --hosting-plan flex has neither limit."
  fi
  if [[ "$PYTHON_VERSION" == 3.11 ]]; then
    note "Python 3.11: supported on Azure Functions until October 2027; --python-version 3.12 is supported until October 2028"
  fi
  if [[ "$IMAGES_DATA_ROLE" == owner && "$BLOB_TRIGGER_SOURCE" == EventGrid ]]; then
    warn "IMAGES_DATA_ROLE=owner: the app's identity gets the built-in Storage Blob Data Owner on container $IMAGES_CONTAINER, which is broader than it needs - it may also write, delete and change the access of every image there. The default (custom) defines a role that only reads the images and their index tags."
  fi
  if [[ "$BLOB_TRIGGER_SOURCE" == LogsAndContainerScan ]]; then
    warn "BLOB_TRIGGER_SOURCE=LogsAndContainerScan: the polling blob trigger scans the whole container when the app starts and runs image_uploaded once for every blob it holds no receipt for - every image already there, so 100,000 images mean 100,000 calls and Wallie sends; afterwards it can lag up to 10 minutes, and there are open reports of it missing blobs. Event Grid (the default) sees only new uploads; the nightly sync covers the rest."
  fi
}

# ---------------------------------------------------------------------------------------------------
# Steps (here: providers, group, storage, function app, settings, code; the others in the files sourced
# above). Each reads what exists and creates or corrects only what differs, and says so through outcome.

ensure_providers() {
  local namespace
  for namespace in "${PROVIDERS_TO_REGISTER[@]}"; do
    outcome create "Resource provider $namespace" "registering"
    az_change provider register --namespace "$namespace" --wait
  done
}

ensure_resource_group() {
  if ((RG_EXISTS)); then
    outcome unchanged "Resource group $RESOURCE_GROUP" "exists"
  else
    outcome create "Resource group $RESOURCE_GROUP" "creating in $LOCATION"
    az_change group create --name "$RESOURCE_GROUP" --location "$LOCATION" \
      --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
  fi
}

# A new storage account leaves shared-key access as Azure's default: the deploy never turns it on or off
# (docs/deploy.md says how to turn it off once nothing needs it).
create_storage_account() {
  az_change storage account create --name "$1" --resource-group "$RESOURCE_GROUP" \
    --location "$LOCATION" --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 \
    --allow-blob-public-access false --https-only true \
    --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
}

HOST_ACCOUNT_ID=""

ensure_host_storage() {
  HOST_ACCOUNT_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Storage/storageAccounts/$HOST_STORAGE_ACCOUNT"
  if ((HOST_EXISTS)); then
    outcome unchanged "Host storage account $HOST_STORAGE_ACCOUNT" "exists"
  else
    outcome create "Host storage account $HOST_STORAGE_ACCOUNT" "creating (StorageV2, Standard_LRS)"
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
    outcome unchanged "Images storage account $IMAGES_STORAGE_ACCOUNT" "exists in $IMAGES_ACCOUNT_RG, reused as it is"
  else
    outcome create "Images storage account $IMAGES_STORAGE_ACCOUNT" "creating (StorageV2, Standard_LRS)"
    create_storage_account "$IMAGES_STORAGE_ACCOUNT"
    IMAGES_ACCOUNT_CREATED=1
    IMAGES_ACCOUNT_RG="$RESOURCE_GROUP"
    IMAGES_ACCOUNT_LOCATION="$LOCATION"
    IMAGES_ACCOUNT_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Storage/storageAccounts/$IMAGES_STORAGE_ACCOUNT"
    if ! simulating; then
      az storage account show --ids "$IMAGES_ACCOUNT_ID" --output json >"$TMP_DIR/images-account.json"
    fi
  fi
  local endpoints="" access
  if [[ -s "$TMP_DIR/images-account.json" ]]; then
    endpoints="$(python3 "$SCRIPT_DIR/azhelp.py" fields primaryEndpoints.blob primaryEndpoints.queue \
      publicNetworkAccess networkRuleSet.defaultAction <"$TMP_DIR/images-account.json")"
  fi
  if [[ -n "$endpoints" ]]; then
    BLOB_SERVICE_URI="$(sed -n 1p <<<"$endpoints")"
    QUEUE_SERVICE_URI="$(sed -n 2p <<<"$endpoints")"
    access="$(sed -n '3,4p' <<<"$endpoints")"
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
      outcome unchanged "Container $container" "exists"
    else
      outcome create "Container $container" "creating (private)"
      az_change storage container-rm create --storage-account "$IMAGES_ACCOUNT_ID" \
        --name "$container" --public-access off --metadata "$MANAGED_METADATA_KEY=$APP_NAME" --output none
    fi
  done
  local queue queue_id
  for queue in "${QUEUES[@]}"; do
    queue_id="$IMAGES_ACCOUNT_ID/queueServices/default/queues/$queue"
    if resource_exists resource show --ids "$queue_id" --api-version "$STORAGE_API_VERSION"; then
      outcome unchanged "Queue $queue" "exists"
    else
      outcome create "Queue $queue" "creating"
      az_change resource create --id "$queue_id" --api-version "$STORAGE_API_VERSION" \
        --properties "{\"metadata\":{\"$MANAGED_METADATA_KEY\":\"$APP_NAME\"}}" --output none
    fi
  done
}

APP_ID=""
APP_HOST=""
APP_PRINCIPAL_ID=""
APP_EXISTS=0  # the app exists now (not only in a plan)

# `az functionapp show` answers with the flattened site on Consumption and Premium, but on Flex
# Consumption with the raw ARM resource (azure-cli's show_functionapp returns get_raw_functionapp), where
# everything is under "properties": the query reads both. Python: functionAppConfig.runtime.version on
# Flex, siteConfig.linuxFxVersion ("Python|3.11") elsewhere.
APP_DETAILS_QUERY="[id, not_null(properties.defaultHostName, defaultHostName), not_null(properties.httpsOnly, httpsOnly), not_null(properties.serverFarmId, serverFarmId), tags.codeSha256, identity.principalId, not_null(properties.functionAppConfig.runtime.version, siteConfig.linuxFxVersion), properties.functionAppConfig.deployment.storage.authentication.type]"
DEPLOYED_CODE_SHA=""
DEPLOYMENT_AUTH=""

read_app_details() {
  local details="$1" fields=() i
  mapfile -t fields <<<"$details"
  for i in "${!fields[@]}"; do
    [[ "${fields[$i]}" == None ]] && fields[i]=""  # how tsv prints a missing value in a list
  done
  APP_ID="${fields[0]:-}"
  APP_HOST="${fields[1]:-}"
  APP_HTTPS_ONLY="${fields[2]:-}"
  APP_PLAN_ID="${fields[3]:-}"
  DEPLOYED_CODE_SHA="${fields[4]:-}"
  APP_PRINCIPAL_ID="${fields[5]:-}"
  APP_PYTHON="${fields[6]:-}"
  APP_PYTHON="${APP_PYTHON#*|}"
  DEPLOYMENT_AUTH="${fields[7]:-}"
}

APP_HTTPS_ONLY=""
APP_PLAN_ID=""
APP_PYTHON=""

ensure_function_app() {
  local created=0 rc=0 details=""
  details="$(az_read functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "$APP_DETAILS_QUERY" --output tsv 2>"$TMP_DIR/app-error")" || rc=$?
  if ((rc == 0)); then
    outcome unchanged "Function app $APP_NAME" "exists"
    APP_EXISTS=1
  elif ((rc != 3)); then
    cat "$TMP_DIR/app-error" >&2
    die "could not read function app $APP_NAME (exit $rc)"
  else
    created=1
    local common=(--name "$APP_NAME" --resource-group "$RESOURCE_GROUP"
      --storage-account "$HOST_STORAGE_ACCOUNT" --runtime python --runtime-version "$PYTHON_VERSION"
      --https-only true --disable-app-insights true
      --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none)
    case "$HOSTING_PLAN" in
      flex)
        outcome create "Function app $APP_NAME" "creating on Flex Consumption (Python $PYTHON_VERSION)" \
          "Flex Consumption, Python $PYTHON_VERSION, HTTPS only, system-assigned identity, deployment storage through the identity"
        # The deployment container is reached with the app's identity, which az assigns and gives Storage
        # Blob Data Contributor on the host account: no DEPLOYMENT_STORAGE_CONNECTION_STRING with a key.
        local flex=(--flexconsumption-location "$LOCATION" --instance-memory "$FLEX_INSTANCE_MEMORY"
          --deployment-storage-auth-type SystemAssignedIdentity)
        if [[ -n "${FLEX_MAXIMUM_INSTANCES:-}" ]]; then
          flex+=(--maximum-instance-count "$FLEX_MAXIMUM_INSTANCES")
        fi
        az_change functionapp create "${common[@]}" "${flex[@]}"
        ;;
      consumption)
        outcome create "Function app $APP_NAME" "creating on the (Linux) Consumption plan (Python $PYTHON_VERSION)" \
          "Linux Consumption, Python $PYTHON_VERSION, HTTPS only"
        az_change functionapp create "${common[@]}" --consumption-plan-location "$LOCATION" \
          --os-type Linux --functions-version 4
        ;;
      premium)
        local plan_found=""
        plan_found="$(az_read functionapp plan list --resource-group "$RESOURCE_GROUP" \
          --query "[?name=='$PREMIUM_PLAN_NAME'].id" --output tsv || true)"
        if [[ -z "$plan_found" ]]; then
          outcome create "Elastic Premium plan $PREMIUM_PLAN_NAME" "creating ($PREMIUM_SKU, Linux)"
          az_change functionapp plan create --name "$PREMIUM_PLAN_NAME" --resource-group "$RESOURCE_GROUP" \
            --location "$LOCATION" --sku "$PREMIUM_SKU" --is-linux true \
            --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
        else
          outcome unchanged "Elastic Premium plan $PREMIUM_PLAN_NAME" "exists"
        fi
        outcome create "Function app $APP_NAME" "creating on $PREMIUM_PLAN_NAME (Python $PYTHON_VERSION)" \
          "Elastic Premium $PREMIUM_SKU, Python $PYTHON_VERSION, HTTPS only"
        az_change functionapp create "${common[@]}" --plan "$PREMIUM_PLAN_NAME" \
          --os-type Linux --functions-version 4
        ;;
    esac
  fi
  if ((created)) && simulating; then
    APP_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Web/sites/$APP_NAME"
    APP_HOST="<default host name of $APP_NAME>"
    APP_PLAN_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.Web/serverfarms/<plan az creates for $APP_NAME>"
    APP_HTTPS_ONLY=true
    APP_PYTHON="$PYTHON_VERSION"
    DEPLOYMENT_AUTH="SystemAssignedIdentity"
    return
  fi
  if ((created)); then
    APP_EXISTS=1
    details="$(az functionapp show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --query "$APP_DETAILS_QUERY" --output tsv)"
  fi
  read_app_details "$details"
  # Flex Consumption gives every app a plan of its own, which 'az functionapp create' makes: tag it as
  # the deploy's, so a teardown that cannot delete the whole resource group finds it. (The classic
  # Consumption plan Azure picks may be shared by other apps in the group, so it is left untagged.)
  if ((created)) && [[ "$HOSTING_PLAN" == flex ]]; then
    az_change tag update --resource-id "$APP_PLAN_ID" --operation Merge --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
  fi
  # HTTPS only is a property of the site: 'az resource update' writes just that one (a generic GET and
  # PUT of the site), where 'az functionapp update --set' writes the whole site configuration back,
  # which Flex Consumption rejects for some of its settings.
  if [[ "$(lower "$APP_HTTPS_ONLY")" == true ]]; then
    if ((!created)); then
      outcome unchanged "HTTPS only on $APP_NAME" "on"
    fi
  else
    outcome change "HTTPS only on $APP_NAME" "turning on (it was off)" "httpsOnly: false -> true"
    az_change resource update --ids "$APP_ID" --api-version "$WEB_API_VERSION" \
      --set properties.httpsOnly=true --output none
  fi
  ensure_python_version
}

# The Python version the app runs: Flex Consumption keeps it in functionAppConfig.runtime, the other
# plans in linuxFxVersion.
ensure_python_version() {
  if [[ -z "$APP_PYTHON" || "$APP_PYTHON" == "$PYTHON_VERSION" ]]; then
    return
  fi
  outcome change "Python version of $APP_NAME" "$APP_PYTHON -> $PYTHON_VERSION" "Python: $APP_PYTHON -> $PYTHON_VERSION"
  if [[ "$HOSTING_PLAN" == flex ]]; then
    az_change functionapp runtime config set --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --runtime-version "$PYTHON_VERSION" --output none
  else
    az_change functionapp config set --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --linux-fx-version "Python|$PYTHON_VERSION" --output none
  fi
  SETTINGS_CHANGED=1
}

# APP_PRINCIPAL_ID comes from ensure_function_app's read of the app.
ensure_identity() {
  if [[ -n "$APP_PRINCIPAL_ID" ]]; then
    if ((APP_EXISTS)); then
      outcome unchanged "System-assigned identity of $APP_NAME" "exists ($APP_PRINCIPAL_ID)"
    fi
    return 0
  fi
  if ((APP_EXISTS)); then
    outcome create "System-assigned identity of $APP_NAME" "assigning"
  fi
  APP_PRINCIPAL_ID="$(az_change functionapp identity assign --name "$APP_NAME" \
    --resource-group "$RESOURCE_GROUP" --identities '[system]' --query principalId --output tsv)"
  if simulating; then
    APP_PRINCIPAL_ID="<principal-id of $APP_NAME>"
  fi
  [[ -n "$APP_PRINCIPAL_ID" ]] || die "no principalId from 'az functionapp identity assign'"
}

# Flex Consumption: the deployment container is reached with the app's identity. An app created before
# the deploy did this (or by hand) may still use DEPLOYMENT_STORAGE_CONNECTION_STRING, with the host
# account's key: switch it ('az functionapp deployment config set' also gives the identity its role).
ensure_deployment_storage_identity() {
  [[ "$HOSTING_PLAN" == flex ]] || return 0
  if [[ "$DEPLOYMENT_AUTH" == SystemAssignedIdentity ]]; then
    if ((APP_EXISTS)); then
      outcome unchanged "Deployment storage of $APP_NAME" "through the app's identity"
    fi
    return 0
  fi
  outcome change "Deployment storage of $APP_NAME" "switching to the app's identity" \
    "authentication: ${DEPLOYMENT_AUTH:-none} -> SystemAssignedIdentity (no more DEPLOYMENT_STORAGE_CONNECTION_STRING)"
  az_change functionapp deployment config set --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --deployment-storage-auth-type SystemAssignedIdentity --output none
  DEPLOYMENT_AUTH="SystemAssignedIdentity"
  HOST_ROLES_NEW=1
}

kv_reference() {
  printf '@Microsoft.KeyVault(SecretUri=%ssecrets/%s/)' "$KEY_VAULT_URI" "$1"
}

# Every app setting the deploy manages, as NAME=VALUE; an empty VALUE means "must not be set". The host
# storage: on Flex and Premium the host reaches its account with the app's identity
# (AzureWebJobsStorage__accountName; Microsoft's "Connecting to host storage with an identity"), so the
# keyed AzureWebJobsStorage that 'az functionapp create' writes goes, and so does Flex's keyed
# DEPLOYMENT_STORAGE_CONNECTION_STRING. Premium's Azure Files content share
# (WEBSITE_CONTENTAZUREFILECONNECTIONSTRING) takes only a connection string ("Azure Files doesn't support
# identity-based connections") and Linux Consumption builds through a keyed AzureWebJobsStorage: those
# are the host's own and stay.
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
    "RENDITIONS_CONTAINER=$RENDITIONS_CONTAINER" \
    "WALLIE_PASSWORD=$(kv_reference WALLIE-PASSWORD)" \
    "TRAEDE_ACCESS_TOKEN=$(kv_reference TRAEDE-ACCESS-TOKEN)" \
    "TRAEDE_APP_KEY=$(kv_reference TRAEDE-APP-KEY)" \
    "BLOB_TRIGGER_SOURCE=$BLOB_TRIGGER_SOURCE" \
    "APPLICATIONINSIGHTS_CONNECTION_STRING=$APP_INSIGHTS_CONNECTION_STRING"
  if host_storage_by_identity; then
    printf '%s\n' "AzureWebJobsStorage__accountName=$HOST_STORAGE_ACCOUNT" "AzureWebJobsStorage="
  fi
  if [[ "$HOSTING_PLAN" == flex ]]; then
    printf '%s\n' "DEPLOYMENT_STORAGE_CONNECTION_STRING="
  fi
}

SETTINGS_CHANGED=0

# Only settings that differ are written, and only settings the deploy manages are removed: every write
# restarts the app, and the host's own settings are not the deploy's. The values go to az in a private
# JSON file (--settings @file): none is a secret (the partner secrets are Key Vault references), but
# nothing the deploy writes appears on a command line, where any user of the machine could read it.
ensure_app_settings() {
  desired_app_settings >"$TMP_DIR/settings-desired"
  if ((APP_EXISTS)); then
    az functionapp config appsettings list --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --output json >"$TMP_DIR/settings-current.json"
  else
    printf '[]' >"$TMP_DIR/settings-current.json"
  fi
  local rows=() row action name old new changed=() removed=() diff=()
  mapfile -t rows < <(python3 "$SCRIPT_DIR/azhelp.py" settings-diff "$TMP_DIR/settings-desired" \
    <"$TMP_DIR/settings-current.json")
  rm -f "$TMP_DIR/settings-current.json"
  for row in "${rows[@]}"; do
    IFS=$'\t' read -r action name old new <<<"$row"
    if [[ "$action" == remove ]]; then
      removed+=("$name")
      diff+=("- $name (was $old)")
    elif [[ "$old" == "(not set)" ]]; then
      changed+=("$name")
      diff+=("+ $name = $new")
    else
      changed+=("$name")
      diff+=("~ $name: $old -> $new")
    fi
  done
  if ((${#changed[@]} == 0 && ${#removed[@]} == 0)); then
    outcome unchanged "App settings of $APP_NAME" "up to date"
    return
  fi
  SETTINGS_CHANGED=1
  local message="writing ${#changed[@]}${changed[*]:+ (${changed[*]})}"
  if ((${#removed[@]})); then
    message+="; removing ${removed[*]} (no longer set in deploy.env, or replaced: the app's default applies)"
  fi
  outcome change "App settings of $APP_NAME" "$message" "${diff[@]}"
  if ((${#changed[@]})); then
    local file="$TMP_DIR/settings.json" arg
    if [[ "$DRY_RUN" == 1 ]]; then
      arg="@<temporary file with the settings as JSON>"
    else
      (umask 077 && python3 "$SCRIPT_DIR/azhelp.py" settings-json "$TMP_DIR/settings-desired" "${changed[@]}" >"$file")
      arg="@$file"
    fi
    az_change functionapp config appsettings set --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --settings "$arg" --output none
    rm -f "$file"
  fi
  if ((${#removed[@]})); then
    az_change functionapp config appsettings delete --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
      --setting-names "${removed[@]}" --output none
  fi
}

ensure_code() {
  local zip="${DEPLOY_BUILD_DIR:-$SCRIPT_DIR/.build}/$APP_NAME.zip" line sha
  line="$(python3 "$SCRIPT_DIR/package.py" "$PROJECT_DIR" "$zip")"
  sha="${line%% *}"
  if [[ "$DEPLOYED_CODE_SHA" == "$sha" && "$FORCE_CODE_DEPLOY" != 1 ]]; then
    outcome unchanged "Code of $APP_NAME" "up to date (package sha256 $sha)"
    return
  fi
  outcome change "Code of $APP_NAME" "deploying with remote build (package sha256 $sha)" \
    "package sha256 $sha from $PROJECT_DIR (running: ${DEPLOYED_CODE_SHA:-nothing yet})"
  # On Flex Consumption this command uses the One Deploy endpoint (/api/publish, RemoteBuild=true);
  # on Consumption/Premium it is Kudu zip deploy with SCM_DO_BUILD_DURING_DEPLOYMENT. Either way
  # requirements.txt is installed by a remote (Oryx) build on Linux. On Flex the package goes to the
  # deployment container with the app's identity: right after that role was given, the upload is refused
  # until it applies, so it is retried as long as a role takes.
  local deploy=(az_change functionapp deployment source config-zip --name "$APP_NAME" --resource-group "$RESOURCE_GROUP"
    --src "$zip" --build-remote true --timeout 900 --output none)
  if [[ "$HOSTING_PLAN" == flex ]] && ((HOST_ROLES_NEW)); then
    retry "the app's identity to reach its deployment storage (a new role takes up to 10 minutes to apply)" "${deploy[@]}"
  else
    "${deploy[@]}"
  fi
  az_change tag update --resource-id "$APP_ID" --operation Merge --tags "codeSha256=$sha" --output none
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
  local host="$HOST_STORAGE_ACCOUNT (through the app's identity)"
  host_storage_by_identity || host="$HOST_STORAGE_ACCOUNT (account key: Linux Consumption needs it)"
  local trigger="Event Grid (BlobCreated -> image_uploaded, BlobDeleted -> image_deleted)"
  [[ "$BLOB_TRIGGER_SOURCE" == EventGrid ]] || trigger="polling (LogsAndContainerScan); BlobDeleted -> image_deleted by Event Grid"
  cat <<SUMMARY

Deployed $APP_NAME ($HOSTING_PLAN plan, Python $PYTHON_VERSION, HTTPS only) in resource group $RESOURCE_GROUP.
  Function app:      https://$APP_HOST
  Images:            $IMAGES_STORAGE_ACCOUNT/$IMAGES_CONTAINER ($images_origin)
  App containers:    ${APP_CONTAINERS[*]} (on $IMAGES_STORAGE_ACCOUNT)
  Queues:            ${QUEUES[*]} (on $IMAGES_STORAGE_ACCOUNT)
  Host storage:      $host
  Key Vault:         $KEY_VAULT_NAME (secrets WALLIE-PASSWORD, TRAEDE-ACCESS-TOKEN, TRAEDE-APP-KEY: references resolved)
  Logs:              Application Insights $APP_INSIGHTS_NAME (workspace $LOG_WORKSPACE_NAME)
  Alerts:            $alerts
  Event Grid topic:  $SYSTEM_TOPIC_NAME (resource group $SYSTEM_TOPIC_RG)
  Blob trigger:      $trigger
  Nightly sync:      $SYNC_SCHEDULE (UTC, NCRONTAB)

Event Grid reports only new uploads: images already in the container reach the partners with the
nightly full sync. To run the first full sync now, start the nightly_sync timer function through the
host's admin API (HTTP 202 means it started; follow it in Application Insights $APP_INSIGHTS_NAME).
The master key goes from az to curl through a pipe (-H @- reads the header from stdin), never on a
command line:

  az functionapp keys list -g $RESOURCE_GROUP -n $APP_NAME --query masterKey -o tsv \\
    | sed 's/^/x-functions-key: /' \\
    | curl -fsS -X POST "https://$APP_HOST/admin/functions/nightly_sync" -H @- \\
        -H "Content-Type: application/json" -d '{}'
SUMMARY
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
  elif ((PLAN_MODE)); then
    log "Plan: reading what exists; nothing is changed"
  fi
  say_plan_caveats
  preflight
  ensure_providers
  ensure_resource_group
  ensure_host_storage
  ensure_images_account
  ensure_images_role_definition
  ensure_containers_and_queues
  ensure_key_vault
  ensure_secrets
  ensure_monitoring
  ensure_function_app
  ensure_identity
  ensure_app_roles
  ensure_deployment_storage_identity
  ensure_app_settings
  ensure_code
  ensure_event_subscriptions
  check_key_vault_references
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run done: nothing was changed"
  elif ((PLAN_MODE)); then
    print_plan
  else
    print_summary
  fi
}

main "$@"
