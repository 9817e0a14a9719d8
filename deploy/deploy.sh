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
  "RUN_HISTORY_DAYS=30"
  "LOG_LEVEL=INFO"
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
  if [[ "$BLOB_TRIGGER_SOURCE" == LogsAndContainerScan ]]; then
    warn "BLOB_TRIGGER_SOURCE=LogsAndContainerScan: the polling blob trigger scans the whole container when the app starts and runs image_uploaded once for every blob it holds no receipt for - every image already there, so 100,000 images mean 100,000 calls and Wallie sends; afterwards it can lag up to 10 minutes, and there are open reports of it missing blobs. Event Grid (the default) sees only new uploads; the nightly sync covers the rest."
  fi
}

# ---------------------------------------------------------------------------------------------------
# Preflight: everything below only reads. It stops before anything is created when az is too old, you
# are not logged in, an existing storage account cannot serve the app, or you lack a right this run needs.

DEPLOYER_ID=""
DEPLOYER_TYPE=""
TMP_DIR=""
RG_EXISTS=0
VAULT_EXISTS=0
HOST_EXISTS=0
IMAGES_FOUND=""
IMAGES_HNS=0
PROVIDERS_TO_REGISTER=()

preflight() {
  command -v python3 >/dev/null || die "python3 is needed (it builds the package)"
  if [[ "$DRY_RUN" == 1 ]]; then
    SUBSCRIPTION_ID="<subscription-id>"
    DEPLOYER_ID="<your-object-id>"
    DEPLOYER_TYPE="User"
    PROVIDERS_TO_REGISTER=("${PROVIDERS[@]}")
    plan_rights
    log "Dry run: nothing is read from Azure, so neither the Azure CLI version ($AZ_MIN_VERSION or newer), an existing storage account's kind nor your rights are checked. A real run first checks that you may do this:"
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
  log "Subscription $SUBSCRIPTION_ID, $( ((PLAN_MODE)) && printf 'planning' || printf 'deploying') as $LOGIN_NAME ($DEPLOYER_ID)"
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
  ACCOUNT_PROBLEMS=()
  if [[ -n "$IMAGES_FOUND" ]]; then
    az storage account show --ids "${IMAGES_FOUND%%$'\t'*}" --output json >"$TMP_DIR/images-account.json" \
      || die "could not read storage account $IMAGES_STORAGE_ACCOUNT"
    check_storage_account images "$TMP_DIR/images-account.json"
  fi
  if ((RG_EXISTS)); then
    local rc=0
    az_read storage account show --name "$HOST_STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" \
      --output json >"$TMP_DIR/host-account.json" 2>"$TMP_DIR/host-account-error" || rc=$?
    case "$rc" in
      0)
        HOST_EXISTS=1
        check_storage_account host "$TMP_DIR/host-account.json"
        ;;
      3) ;;
      *)
        cat "$TMP_DIR/host-account-error" >&2
        die "could not read storage account $HOST_STORAGE_ACCOUNT (exit $rc)"
        ;;
    esac
  fi
  if ((${#ACCOUNT_PROBLEMS[@]})); then
    printf 'ERROR: %s\n' "${ACCOUNT_PROBLEMS[@]}" >&2
    die "stopped before creating anything: the storage account above cannot serve the app"
  fi
  if ((RG_EXISTS)) && resource_exists keyvault show --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP"; then
    VAULT_EXISTS=1
  fi
  if [[ -n "${ALERT_ACTION_GROUP_ID:-}" ]] \
    && ! resource_exists resource show --ids "$ALERT_ACTION_GROUP_ID" --api-version 2023-01-01; then
    die "ALERT_ACTION_GROUP_ID: action group $ALERT_ACTION_GROUP_ID not found"
  fi
}

ACCOUNT_PROBLEMS=()

# check_storage_account ROLE FILE: adds to ACCOUNT_PROBLEMS what makes the account in FILE (JSON) unfit
# for ROLE (images or host), and warns about what merely limits it (a hierarchical namespace). Which
# kinds have which services, and what to use instead, is in azhelp.py.
check_storage_account() {
  local kind message
  while IFS=$'\t' read -r kind message; do
    case "$kind" in
      stop) ACCOUNT_PROBLEMS+=("$message") ;;
      warn) warn "$message" ;;
      hns) if [[ "$1" == images ]]; then IMAGES_HNS=1; fi ;;
    esac
  done < <(python3 "$SCRIPT_DIR/azhelp.py" storage-account "$1" "$HOSTING_PLAN" "$BLOB_TRIGGER_SOURCE" <"$2")
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
# Steps. Each reads what exists and creates or corrects only what differs, and says so through outcome.

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

KEY_VAULT_ID=""
KEY_VAULT_URI=""
VAULT_READY=0  # the vault exists now (not only in a plan)

ensure_key_vault() {
  if ((VAULT_EXISTS)); then
    outcome unchanged "Key Vault $KEY_VAULT_NAME" "exists"
  else
    local deleted=""
    # Listing deleted vaults is a subscription-scope right (Microsoft.KeyVault/locations/deletedVaults/
    # read), checked in the preflight: without it a soft-deleted vault would look absent and creating
    # one of the same name would fail.
    if [[ "$DRY_RUN" != 1 ]]; then
      deleted="$(az keyvault list-deleted --resource-type vault \
        --query "[?name=='$KEY_VAULT_NAME'].name" --output tsv)" \
        || die "could not list soft-deleted Key Vaults (a subscription-scope right, see 'Permissions' in docs/deploy.md)"
    fi
    if [[ -n "$deleted" ]]; then
      # A torn-down deployment leaves its vault soft-deleted for 90 days, holding the name.
      outcome create "Key Vault $KEY_VAULT_NAME" "recovering the soft-deleted vault" "recovered with its secrets, without its role assignments"
      az_change keyvault recover --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP" \
        --location "$LOCATION" --output none
    else
      outcome create "Key Vault $KEY_VAULT_NAME" "creating (RBAC authorization)"
      az_change keyvault create --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP" \
        --location "$LOCATION" --enable-rbac-authorization true \
        --tags "$MANAGED_TAG_KEY=$APP_NAME" --output none
    fi
  fi
  if simulating && ((!VAULT_EXISTS)); then
    KEY_VAULT_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.KeyVault/vaults/$KEY_VAULT_NAME"
    KEY_VAULT_URI="https://$(lower "$KEY_VAULT_NAME").vault.azure.net/"
    return
  fi
  VAULT_READY=1
  local vault
  vault="$(az keyvault show --name "$KEY_VAULT_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "[id, properties.vaultUri]" --output tsv)"
  KEY_VAULT_ID="$(sed -n 1p <<<"$vault")"
  KEY_VAULT_URI="$(sed -n 2p <<<"$vault")"
  KEY_VAULT_URI="${KEY_VAULT_URI%/}/"
}

# ensure_role PRINCIPAL_ID PRINCIPAL_TYPE ROLE SCOPE WHO
ensure_role() {
  local principal="$1" type="$2" role="$3" scope="$4" who="$5" existing=""
  existing="$(az_read role assignment list --assignee-object-id "$principal" --role "$role" --scope "$scope" \
    --fill-principal-name false --query "[].id" --output tsv || true)"
  if [[ -n "$existing" ]]; then
    outcome unchanged "Role $role for $who on ${scope##*/}" "assigned"
    return 1
  fi
  create_role_assignment "$principal" "$type" "$role" "$scope" "$who"
}

create_role_assignment() {
  local principal="$1" type="$2" role="$3" scope="$4" who="$5"
  outcome create "Role $role for $who on ${scope##*/}" "assigning"
  # --assignee-object-id with the principal type skips the Graph lookup, which fails for a few
  # minutes after an identity is created; retry covers replication delays anyway.
  retry "role assignment '$role'" az_change role assignment create \
    --assignee-object-id "$principal" --assignee-principal-type "$type" \
    --role "$role" --scope "$scope" --output none
}

SECRETS_CHANGED=0

# Secret name in the vault -> environment variable holding a new value.
SECRETS=(
  "WALLIE-PASSWORD:WALLIE_PASSWORD"
  "TRAEDE-ACCESS-TOKEN:TRAEDE_ACCESS_TOKEN"
  "TRAEDE-APP-KEY:TRAEDE_APP_KEY"
)

ensure_secrets() {
  local officer_new=0
  ensure_role "$DEPLOYER_ID" "$DEPLOYER_TYPE" "Key Vault Secrets Officer" "$KEY_VAULT_ID" "you" && officer_new=1
  local existing="" entry name var readable=1
  if simulating; then
    # A plan reads the secrets when it may; it cannot while the vault or your role would be new.
    if [[ "$PLAN_MODE" == 1 ]] && ((VAULT_READY && !officer_new)); then
      existing="$(az keyvault secret list --vault-name "$KEY_VAULT_NAME" --query "[].name" --output tsv)" \
        || readable=0
    else
      readable=0
    fi
  else
    # The first calls after the role assignment are refused until it applies (up to 10 minutes).
    existing="$(retry "your Key Vault Secrets Officer role on $KEY_VAULT_NAME to apply" \
      az keyvault secret list --vault-name "$KEY_VAULT_NAME" --query "[].name" --output tsv)"
  fi
  for entry in "${SECRETS[@]}"; do
    name="${entry%%:*}"
    var="${entry#*:}"
    if [[ -z "${!var:-}" ]]; then
      if grep -qx -- "$name" <<<"$existing"; then
        outcome unchanged "Secret $name" "kept (no new value in \$$var)"
      elif ((!readable)); then
        outcome create "Secret $name" "would need \$$var" "needs \$$var unless the vault already holds it"
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
        outcome unchanged "Secret $name" "unchanged"
        continue
      fi
      outcome change "Secret $name" "new version from \$$var" "new version from \$$var (value hidden)"
    else
      outcome create "Secret $name" "setting from \$$var" "from \$$var (value hidden)"
    fi
    SECRETS_CHANGED=1
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
  simulating && return
  local file="$TMP_DIR/secret-$name"
  (umask 077 && printf '%s' "${!var}" >"$file")
  az keyvault secret set --vault-name "$KEY_VAULT_NAME" --name "$name" \
    --file "$file" --encoding utf-8 --output none
  rm -f "$file"
}

# ensure_arm_resource LABEL ID API_VERSION BODY: creates the resource from the full JSON BODY, or, when
# it exists, compares it with BODY (azhelp.py matches) and writes BODY again only if they differ.
# Leaves the resource as Azure now has it (JSON) in ARM_CURRENT (empty when it does not exist yet).
ARM_CURRENT=""
ensure_arm_resource() {
  local label="$1" id="$2" api="$3" body="$4" rc=0 current
  current="$(az_read resource show --ids "$id" --api-version "$api" --output json 2>"$TMP_DIR/arm-error")" || rc=$?
  ARM_CURRENT=""
  case "$rc" in
    0)
      ARM_CURRENT="$current"
      printf '%s' "$body" >"$TMP_DIR/arm-desired.json"
      if python3 "$SCRIPT_DIR/azhelp.py" matches "$TMP_DIR/arm-desired.json" <<<"$current"; then
        outcome unchanged "$label" "exists, as configured"
        return
      fi
      local differences=()
      mapfile -t differences < <(python3 "$SCRIPT_DIR/azhelp.py" diff "$TMP_DIR/arm-desired.json" <<<"$current")
      outcome change "$label" "differs from what the deploy sets: updating" "${differences[@]}"
      ;;
    3) outcome create "$label" "creating" ;;
    *)
      cat "$TMP_DIR/arm-error" >&2
      die "could not read $label (exit $rc)"
      ;;
  esac
  if simulating; then
    return
  fi
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
        if [[ -z "$ARM_CURRENT" ]]; then
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
  if [[ "$DRY_RUN" == 1 ]] || { simulating && ((!RG_EXISTS)); }; then
    return
  fi
  # Alert rules first: they point at the action group.
  local existing type
  existing="$(az resource list --resource-group "$RESOURCE_GROUP" \
    --query "[?tags.\"$MANAGED_TAG_KEY\"=='$APP_NAME'].[id, type]" --output tsv)"
  for kind in microsoft.insights/scheduledqueryrules microsoft.insights/actiongroups; do
    while IFS=$'\t' read -r id type; do
      [[ -n "$id" && "$(lower "$type")" == "$kind" ]] || continue
      if ! printf '%s\n' "${wanted[@]}" | grep -qxF -- "$(lower "$id")"; then
        outcome delete "${id##*/}" "no longer wanted (alerting changed in deploy.env): deleting"
        az_change resource delete --ids "$id" --output none
      fi
    done <<<"$existing"
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

# The roles the app's identity needs, as "ROLE|SCOPE" lines. Sources: Microsoft's "Azure Blob storage
# trigger" permissions table and "Connecting to host storage with an identity". The Event Grid-sourced
# blob trigger only reads the blob it is given, so the images need only read access to the container;
# the polling trigger (BLOB_TRIGGER_SOURCE=LogsAndContainerScan) keeps its receipts and leases there and
# needs Storage Blob Data Owner on the account. User-delegation SAS needs Storage Blob Delegator on the
# account. The app creates, leases and deletes blobs in SYNC_STATE_CONTAINER and writes reports to
# RUN_HISTORY_CONTAINER. The host's own account: HOST_ROLES, when the host reaches it by identity.
desired_app_roles() {
  local account="$IMAGES_ACCOUNT_ID" container role
  if [[ "$BLOB_TRIGGER_SOURCE" == EventGrid ]]; then
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
  if host_storage_by_identity; then
    for role in "${HOST_ROLES[@]}"; do
      printf '%s\n' "$role|$HOST_ACCOUNT_ID"
    done
  fi
}

is_managed_app_role() {
  local role
  for role in "${MANAGED_APP_ROLES[@]}"; do
    [[ "$(lower "$role")" == "$(lower "$1")" ]] && return 0
  done
  return 1
}

ROLES_CHANGED=0
HOST_ROLES_NEW=0

# Gives the identity every desired role it lacks, then removes the deploy's roles it should no longer
# have on the images account or the vault, in that order so that it never loses access midway. (On the
# host account it only adds: az gives a Flex app's identity Storage Blob Data Contributor there itself.)
ensure_app_roles() {
  local desired=() existing="" line role scope id
  mapfile -t desired < <(desired_app_roles)
  existing="$(app_role_assignments)"
  declare -A have=()
  while IFS=$'\t' read -r id role scope; do
    [[ -n "$id" ]] && have["$(lower "$role|$scope")"]="$id"
  done <<<"$existing"
  for line in "${desired[@]}"; do
    role="${line%%|*}"
    scope="${line#*|}"
    if [[ -n "${have[$(lower "$line")]+set}" ]]; then
      outcome unchanged "Role $role for $APP_NAME on $(role_scope_label "$scope")" "assigned"
      unset "have[$(lower "$line")]"
    else
      create_role_assignment "$APP_PRINCIPAL_ID" ServicePrincipal "$role" "$scope" "$APP_NAME"
      ROLES_CHANGED=1
      if [[ "$(lower "$scope")" == "$(lower "$HOST_ACCOUNT_ID")" ]]; then
        HOST_ROLES_NEW=1
      fi
    fi
  done
  local stale=() key account vault
  account="$(lower "$IMAGES_ACCOUNT_ID")"
  vault="$(lower "$KEY_VAULT_ID")"
  for key in "${!have[@]}"; do
    role="${key%%|*}"
    scope="${key#*|}"
    if is_managed_app_role "$role" && [[ "$scope" == "$account" || "$scope" == "$account/"* || "$scope" == "$vault" ]]; then
      outcome delete "Role $role for $APP_NAME on $(role_scope_label "$scope")" "no longer needed, removing"
      stale+=("${have[$key]}")
    fi
  done
  if ((${#stale[@]})); then
    ROLES_CHANGED=1
    az_change role assignment delete --ids "${stale[@]}" --output none
  fi
}

# The identity's role assignments on the images account, the vault and the host account, as far as each
# exists and the identity is real (a plan of a new app has a placeholder).
app_role_assignments() {
  if [[ "$DRY_RUN" == 1 || "$APP_PRINCIPAL_ID" == "<"* ]]; then
    return 0
  fi
  if [[ -n "$IMAGES_FOUND" ]] || ! simulating; then
    role_assignments_of "$APP_PRINCIPAL_ID" "$IMAGES_ACCOUNT_ID"
  fi
  if ((VAULT_READY)); then
    role_assignments_of "$APP_PRINCIPAL_ID" "$KEY_VAULT_ID"
  fi
  if host_storage_by_identity && { ((HOST_EXISTS)) || ! simulating; }; then
    role_assignments_of "$APP_PRINCIPAL_ID" "$HOST_ACCOUNT_ID"
  fi
}

# "stproductimages", "stproductimages/product-images", "stproductimages queue image-sync-shards"
role_scope_label() {
  local scope="$1" account
  account="${scope#*/storageAccounts/}"
  account="${account%%/*}"
  case "$scope" in
    */blobServices/default/containers/*) printf '%s/%s' "$account" "${scope##*/}" ;;
    */queueServices/default/queues/*) printf '%s queue %s' "$account" "${scope##*/}" ;;
    *) printf '%s' "${scope##*/}" ;;
  esac
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
# with a blob trigger. Both are read from the app, never assumed. A plan asks once and does not wait.
wait_for_functions() {
  [[ "$DRY_RUN" == 1 || -n "$FUNCTION_IDS" ]] && return 0
  if simulating; then
    ((APP_EXISTS)) && functions_indexed
    return 0
  fi
  log "Waiting for the host to start and index the functions"
  retry "functions image_uploaded and image_deleted to be indexed" functions_indexed
}

# Succeeds when the key is in BLOBS_EXTENSION_KEY_FILE.
wait_for_blobs_extension_key() {
  [[ "$DRY_RUN" == 1 ]] && return 1
  [[ -n "$BLOBS_EXTENSION_KEY_FILE" ]] && return 0
  BLOBS_EXTENSION_KEY_FILE="$TMP_DIR/blobs-extension-key"
  if simulating; then
    ((APP_EXISTS)) && blobs_extension_key_ready && return 0
    BLOBS_EXTENSION_KEY_FILE=""
    return 1
  fi
  wait_for_functions
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
      outcome unchanged "Event Grid system topic $name" "exists (in $rg)"
      return
    fi
  done <<<"$topics"
  SYSTEM_TOPIC_NAME="${SYSTEM_TOPIC_NAME:-$IMAGES_STORAGE_ACCOUNT-events}"
  SYSTEM_TOPIC_RG="$IMAGES_ACCOUNT_RG"
  outcome create "Event Grid system topic $SYSTEM_TOPIC_NAME" "creating on $IMAGES_STORAGE_ACCOUNT"
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
  if [[ ! -s "$2" ]]; then
    echo differs  # exists, but what it should be is not known yet (a plan of an app without its key)
  elif python3 "$SCRIPT_DIR/azhelp.py" matches "$2" <<<"$current"; then
    echo ok
  else
    echo differs
  fi
}

# BlobCreated of fully committed blobs only (Microsoft's event schema for Blob Storage, and "Practices
# for consuming events"): PutBlob and PutBlockList fire once the block blob is committed, and so does
# CopyBlob - except on an account with a hierarchical namespace, where BlobCreated fires when the copy
# starts, not when the blob is complete, so there CopyBlob is left out; FlushWithClose commits a file
# written through the Data Lake API (CreateFile makes it empty first); an SFTP upload sends SftpCreate for
# the empty blob and SftpCommit when its content is committed.
committed_blob_apis() {
  if ((IMAGES_HNS)); then
    printf '%s\n' PutBlob PutBlockList FlushWithClose SftpCommit
  else
    printf '%s\n' CopyBlob PutBlob PutBlockList FlushWithClose SftpCommit
  fi
}

# Every plan uses the Event Grid source for image_uploaded (BLOB_TRIGGER_SOURCE=EventGrid): BlobCreated
# goes to the blob extension's webhook, BlobDeleted to image_deleted.
ensure_event_subscriptions() {
  ensure_system_topic
  local subject="/blobServices/default/containers/$IMAGES_CONTAINER/"
  local common=(--system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG"
    --subject-begins-with "$subject" --event-delivery-schema eventgridschema --output none)
  local desired_file="$TMP_DIR/subscription-desired.json" state apis=()
  mapfile -t apis < <(committed_blob_apis)
  if [[ "$BLOB_TRIGGER_SOURCE" == EventGrid ]]; then
    local have_key=0
    : >"$desired_file"
    if wait_for_blobs_extension_key; then
      have_key=1
      local api_list
      api_list="$(printf '"%s",' "${apis[@]}")"
      (umask 077 && printf '{"destination":{"endpointType":"WebHook","endpointUrl":"https://%s/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=%s"},"filter":{"includedEventTypes":["Microsoft.Storage.BlobCreated"],"subjectBeginsWith":"%s","advancedFilters":[{"key":"data.api","operatorType":"StringIn","values":[%s]}]},"eventDeliverySchema":"EventGridSchema"}' \
        "$APP_HOST" "$(cat "$BLOBS_EXTENSION_KEY_FILE")" "$subject" "${api_list%,}" >"$desired_file")
    fi
    state=missing
    [[ "$DRY_RUN" == 1 ]] || state="$(event_subscription_state "$BLOB_CREATED_SUBSCRIPTION" "$desired_file")"
    local what="Event subscription $BLOB_CREATED_SUBSCRIPTION (BlobCreated -> image_uploaded)"
    if [[ "$state" == ok ]]; then
      outcome unchanged "$what" "exists, as configured"
    else
      if [[ "$state" == differs ]]; then
        outcome change "$what" "differs (endpoint, key, container or filter): recreating" \
          "webhook https://$APP_HOST/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=<blobs_extension key>" \
          "filter: BlobCreated in $subject, data.api in ${apis[*]}"
      else
        outcome create "$what" "BlobCreated of committed blobs -> image_uploaded (blob extension webhook)" \
          "webhook https://$APP_HOST/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=<blobs_extension key>$( ((have_key)) || printf ' (once the code runs)')" \
          "filter: BlobCreated in $subject, data.api in ${apis[*]}"
      fi
      local endpoint_arg
      if simulating; then
        endpoint_arg="https://$APP_HOST/runtime/webhooks/blobs?functionName=Host.Functions.image_uploaded&code=<blobs_extension system key>"
        [[ "$DRY_RUN" == 1 ]] && endpoint_arg="@<temporary file with the webhook URL and its key>"
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
        --advanced-filter data.api StringIn "${apis[@]}" "${common[@]}"
    fi
  else
    # The polling opt-in: a BlobCreated subscription would call a webhook no function listens on.
    if [[ "$DRY_RUN" != 1 ]] && resource_exists eventgrid system-topic event-subscription show \
      --name "$BLOB_CREATED_SUBSCRIPTION" --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG"; then
      outcome delete "Event subscription $BLOB_CREATED_SUBSCRIPTION" "image_uploaded polls (BLOB_TRIGGER_SOURCE=LogsAndContainerScan): deleting"
      az_change eventgrid system-topic event-subscription delete --name "$BLOB_CREATED_SUBSCRIPTION" \
        --system-topic-name "$SYSTEM_TOPIC_NAME" --resource-group "$SYSTEM_TOPIC_RG" --yes --output none
    else
      note "no BlobCreated subscription: image_uploaded polls (BLOB_TRIGGER_SOURCE=LogsAndContainerScan)"
    fi
  fi
  local function_id="$APP_ID/functions/image_deleted"
  state=missing
  if [[ "$DRY_RUN" != 1 ]]; then
    printf '{"destination":{"endpointType":"AzureFunction","resourceId":"%s"},"filter":{"includedEventTypes":["Microsoft.Storage.BlobDeleted"],"subjectBeginsWith":"%s"},"eventDeliverySchema":"EventGridSchema"}' \
      "$function_id" "$subject" >"$desired_file"
    state="$(event_subscription_state "$BLOB_DELETED_SUBSCRIPTION" "$desired_file")"
  fi
  local what="Event subscription $BLOB_DELETED_SUBSCRIPTION (BlobDeleted -> image_deleted)"
  if [[ "$state" == ok ]]; then
    outcome unchanged "$what" "exists, as configured"
    return
  fi
  wait_for_functions
  if ! simulating; then
    function_id="$(awk -F'\t' '$1 ~ /\/image_deleted$/ { print $2 }' <<<"$FUNCTION_IDS")"
  fi
  if [[ "$state" == differs ]]; then
    outcome change "$what" "differs (endpoint or container): recreating" "endpoint: function $function_id, filter: BlobDeleted in $subject"
  else
    outcome create "$what" "BlobDeleted -> image_deleted (Azure Function endpoint)" "endpoint: function $function_id, filter: BlobDeleted in $subject"
  fi
  az_change eventgrid system-topic event-subscription create --name "$BLOB_DELETED_SUBSCRIPTION" \
    --endpoint-type azurefunction --endpoint "$function_id" \
    --included-event-types Microsoft.Storage.BlobDeleted "${common[@]}"
}

# Key Vault references. App Service fetches them when the app's settings change and then caches them for
# 24 hours; the documented refresh call ("Use Key Vault references", rotation: POST .../config/
# configreferences/appsettings/refresh) fetches them again now, and GET .../config/configreferences/
# appsettings reports each one's status. So after a run that changed settings, secrets or roles - or
# when a reference does not read Resolved - the app is asked to refresh, and the deploy waits until every
# partner secret's reference reads Resolved. A failure is cached like a success, so a reference that
# still fails (e.g. while the identity's new Key Vault role applies) is refreshed again as it waits.
KV_REFERENCES_API="2022-03-01"

reference_statuses() {
  az rest --method get --url "$APP_ID/config/configreferences/appsettings?api-version=$KV_REFERENCES_API" \
    --output json | python3 "$SCRIPT_DIR/azhelp.py" kv-references "${SECRET_SETTINGS[@]}"
}

refresh_references() {
  az_change rest --method post \
    --url "$APP_ID/config/configreferences/appsettings/refresh?api-version=$KV_REFERENCES_API" --output none
}

REFERENCE_ROWS=()

references_resolved() {
  mapfile -t REFERENCE_ROWS < <(reference_statuses)
  local row name status why pending=0
  for row in "${REFERENCE_ROWS[@]}"; do
    IFS=$'\t' read -r name status why <<<"$row"
    [[ "$status" == Resolved ]] && continue
    [[ "$status" != Initialized ]] && pending=2 || pending=$((pending > 1 ? pending : 1))
  done
  ((pending == 0)) && return 0
  # a failure stays cached until the next refresh: ask again before the next look
  ((pending == 2)) && refresh_references
  return 1
}

check_key_vault_references() {
  local what="Key Vault references of $APP_NAME (${SECRET_SETTINGS[*]})"
  if [[ "$DRY_RUN" == 1 ]]; then
    outcome change "$what" "refreshing, then waiting until each reads Resolved"
    refresh_references
    return
  fi
  if ((!APP_EXISTS)); then
    outcome change "$what" "" "refresh, then wait until each reads Resolved"
    return
  fi
  local reasons=() row name status why now=() unresolved=0
  ((SETTINGS_CHANGED)) && reasons+=("settings")
  ((SECRETS_CHANGED)) && reasons+=("secrets")
  ((ROLES_CHANGED)) && reasons+=("roles")
  mapfile -t REFERENCE_ROWS < <(reference_statuses)
  for row in "${REFERENCE_ROWS[@]}"; do
    IFS=$'\t' read -r name status why <<<"$row"
    now+=("now: $name $status${why:+ ($why)}")
    [[ "$status" == Resolved ]] || unresolved=$((unresolved + 1))
  done
  if ((${#reasons[@]} == 0 && unresolved == 0)); then
    outcome unchanged "$what" "all ${#SECRET_SETTINGS[@]} resolved"
    return
  fi
  local because
  if ((${#reasons[@]})); then
    because="this run $( ((PLAN_MODE)) && printf changes || printf changed) $(printf '%s, ' "${reasons[@]}" | sed 's/, $//')"
  else
    because="$unresolved of ${#SECRET_SETTINGS[@]} do not read Resolved"
  fi
  outcome change "$what" "refreshing ($because)" "refresh ($because), then wait until each reads Resolved" \
    "${now[@]}"
  ((PLAN_MODE)) && return
  refresh_references
  local attempts attempt=1 pause
  attempts="$(retry_attempts)"
  pause="$(retry_pause)"
  while ! references_resolved; do
    if ((attempt >= attempts)); then
      printf 'ERROR: Key Vault references of %s did not all resolve within %s (%s attempts):\n' \
        "$APP_NAME" "$(wait_label)" "$attempts" >&2
      for row in "${REFERENCE_ROWS[@]}"; do
        IFS=$'\t' read -r name status why <<<"$row"
        [[ "$status" == Resolved ]] || printf '  - %s: %s%s\n' "$name" "$status" "${why:+: $why}" >&2
      done
      die "everything else is deployed; the app cannot reach its partners until these resolve: fix the cause and run the deploy again"
    fi
    note "waiting for the Key Vault references to resolve ($(references_summary); attempt $attempt/$attempts, next in ${pause}s; up to $(wait_label))"
    sleep "$pause"
    attempt=$((attempt + 1))
  done
  log "Key Vault references: all ${#SECRET_SETTINGS[@]} resolved"
}

references_summary() {
  local row name status why out=()
  for row in "${REFERENCE_ROWS[@]}"; do
    IFS=$'\t' read -r name status why <<<"$row"
    out+=("$name $status")
  done
  local IFS=,
  printf '%s' "${out[*]}"
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
