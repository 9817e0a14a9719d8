# shellcheck shell=bash disable=SC2034  # the variables set here are read by deploy.sh and teardown.sh
# Shared by deploy.sh and teardown.sh: configuration loading, names, logging, the two ways of calling
# az, the Azure CLI version floor and the rights check.
#
#   az_read   a query; in --dry-run it is not run and answers "not found" (exit 3, no output), so a dry
#             run shows the commands for a subscription where nothing exists yet.
#   az_change anything that creates, updates or deletes; in --dry-run it is printed, not run; in
#             deploy.sh --plan it is not run either (every az_read is), and outcome.sh records what
#             it would have done.
#
# Existence checks rely on az's documented exit codes: 0 found, 3 "resource not found" (HTTP 404),
# anything else is a real error and stops the script.

# Empty arrays under `set -u` need bash 4.4 (2016); macOS ships 3.2 (brew install bash).
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  printf 'ERROR: bash 4.4 or newer is needed (this is %s; on macOS: brew install bash)\n' "$BASH_VERSION" >&2
  exit 1
fi

# The oldest Azure CLI the scripts work with, stated here and in docs/deploy.md only. 2.72.0 added
# `az role assignment list --assignee-object-id` and `--fill-principal-name` (azure-cli HISTORY.rst,
# Version 2.72.0, from PR Azure/azure-cli#30469): the deploy looks up role assignments by object id,
# because the Graph lookup behind --assignee fails for new identities and for deployers without Graph
# read. scripts/setup-azure-cli.sh installs this version too, and the tests run every az call the
# scripts make through its parser as well as through the pinned one.
AZ_MIN_VERSION="2.72.0"

# Every variable deploy.env may set, besides the app settings deploy.sh lists in APP_SETTINGS;
# anything else in the file is an error (it is most likely a typo).
CONFIG_VARS=(
  RESOURCE_GROUP LOCATION APP_NAME HOSTING_PLAN PLAN PREMIUM_SKU FLEX_INSTANCE_MEMORY FLEX_MAXIMUM_INSTANCES
  PYTHON_VERSION BLOB_TRIGGER_SOURCE IMAGES_DATA_ROLE
  HOST_STORAGE_ACCOUNT IMAGES_STORAGE_ACCOUNT IMAGES_RESOURCE_GROUP IMAGES_CONTAINER KEY_VAULT_NAME
  SYSTEM_TOPIC_NAME PROJECT_DIR
  SYNC_SHARD_QUEUE PRODUCT_SYNC_QUEUE SYNC_STATE_CONTAINER RUN_HISTORY_CONTAINER RENDITIONS_CONTAINER
  WALLIE_PASSWORD TRAEDE_ACCESS_TOKEN TRAEDE_APP_KEY
  ALERT_EMAIL ALERT_ACTION_GROUP_ID
  DEPLOY_WAIT_SECONDS DEPLOY_RETRY_ATTEMPTS DEPLOY_RETRY_SLEEP
)
# The app settings deploy.sh writes, by name (filled in by each script; see app_setting_names_in).
APP_SETTING_NAMES=()

# The tag put on everything the deploy creates, so teardown can tell its resources from a customer's.
MANAGED_TAG_KEY="image-sync-app"
# The same mark as metadata on the queues and containers the deploy creates (metadata names must be
# C# identifiers, so no hyphens).
MANAGED_METADATA_KEY="image_sync_app"
# The blob trigger's poison queue: its name is fixed by the Functions host and shared by every
# blob-triggered app that uses the account, so teardown never deletes it from an account it keeps.
BLOB_TRIGGER_POISON_QUEUE="webjobs-blobtrigger-poison"
STORAGE_API_VERSION="2023-05-01"
WEB_API_VERSION="2024-04-01"

DRY_RUN=0
# deploy.sh --plan: every read runs, nothing is written (az_change runs nothing).
PLAN_MODE=0
ENV_FILE=""
declare -A FLAGS=()

# The options deploy.sh and teardown.sh share. parse_common_option ARG [VALUE] records ENV_FILE, a flag in
# FLAGS or DRY_RUN, and leaves in COMMON_SHIFT how many words it used (0: not a shared option).
parse_common_option() {
  COMMON_SHIFT=2
  case "$1" in
    --env-file) ENV_FILE="${2:?--env-file needs a path}" ;;
    -g | --resource-group) FLAGS[RESOURCE_GROUP]="${2:?$1 needs a value}" ;;
    -n | --app-name) FLAGS[APP_NAME]="${2:?$1 needs a value}" ;;
    --images-account) FLAGS[IMAGES_STORAGE_ACCOUNT]="${2:?$1 needs a value}" ;;
    --images-resource-group) FLAGS[IMAGES_RESOURCE_GROUP]="${2:?$1 needs a value}" ;;
    --key-vault) FLAGS[KEY_VAULT_NAME]="${2:?$1 needs a value}" ;;
    --dry-run) DRY_RUN=1; COMMON_SHIFT=1 ;;
    *) COMMON_SHIFT=0 ;;
  esac
}

# The configuration in force: the env file (which never overrides the environment), then the flags.
load_env_and_flags() {
  if [[ -n "$ENV_FILE" ]]; then
    load_env_file "$ENV_FILE"
  fi
  local key
  for key in "${!FLAGS[@]}"; do
    printf -v "$key" '%s' "${FLAGS[$key]}"
  done
}

log() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Prints "az ARGS" shell-quoted, to the original stdout (fd 3), for --dry-run.
print_az() {
  local out="+ az"
  local arg
  for arg in "$@"; do
    out+=" $(printf '%q' "$arg")"
  done
  printf '%s\n' "$out" >&3
}

az_read() {
  if [[ "$DRY_RUN" == 1 ]]; then
    return 3
  fi
  az "$@"
}

az_change() {
  if [[ "$DRY_RUN" == 1 ]]; then
    print_az "$@"
    return 0
  fi
  if [[ "$PLAN_MODE" == 1 ]]; then
    return 0
  fi
  az "$@"
}

# True when this run changes nothing in Azure (--dry-run or --plan): where a change would have returned
# something (a new resource's id, an identity), the steps stand in a placeholder.
simulating() {
  [[ "$DRY_RUN" == 1 || "$PLAN_MODE" == 1 ]]
}

# resource_exists AZ_ARGS... : 0 when the show/get succeeds, 1 when az says "not found" (exit 3).
# Any other failure (no permission, bad input, network) stops the script with az's own message.
resource_exists() {
  local rc=0 err
  err="$(az_read "$@" --output none 2>&1 >/dev/null)" || rc=$?
  case "$rc" in
    0) return 0 ;;
    3) return 1 ;;
    *)
      printf '%s\n' "$err" >&2
      die "az $1 $2 ... failed (exit $rc)"
      ;;
  esac
}

# retry DESCRIPTION COMMAND... : for steps that wait on Azure to catch up. The longest wait is a new role
# assignment: Microsoft's Azure RBAC troubleshooting says a role assignment can take up to 10 minutes to
# apply (Azure Resource Manager caches), and a new identity takes a while to replicate; the host must also
# start and index the functions, with storage roles that may have been assigned moments before. So every
# wait lasts up to DEPLOY_WAIT_SECONDS (default 900: the documented 10 minutes and a margin), asking every
# DEPLOY_RETRY_SLEEP seconds (default 15). DEPLOY_RETRY_ATTEMPTS, when set, caps the attempts instead.
retry() {
  local description="$1"
  shift
  local pause attempts attempt=1
  pause="$(retry_pause)"
  attempts="$(retry_attempts)"
  while true; do
    if "$@"; then
      return 0
    fi
    if ((attempt >= attempts)); then
      die "gave up waiting for: $description (after $attempts attempts over about $(wait_label))"
    fi
    note "waiting for $description (attempt $attempt/$attempts, next in ${pause}s; up to $(wait_label))"
    sleep "$pause"
    attempt=$((attempt + 1))
  done
}

retry_pause() {
  printf '%s' "${DEPLOY_RETRY_SLEEP:-15}"
}

# The attempts a wait gets: DEPLOY_RETRY_ATTEMPTS, or enough for DEPLOY_WAIT_SECONDS at 15 s apart (the
# count stays the same when DEPLOY_RETRY_SLEEP is shortened, so a shorter pause never shortens a wait
# below the attempts it is sized for).
retry_attempts() {
  if [[ -n "${DEPLOY_RETRY_ATTEMPTS:-}" ]]; then
    printf '%s' "$DEPLOY_RETRY_ATTEMPTS"
    return
  fi
  local seconds="${DEPLOY_WAIT_SECONDS:-900}" pause
  pause="$(retry_pause)"
  ((pause > 0)) || pause=15
  printf '%s' $((1 + (seconds + pause - 1) / pause))
}

wait_label() {
  local seconds="${DEPLOY_WAIT_SECONDS:-900}"
  if ((seconds % 60 == 0)); then
    printf '%s minutes' $((seconds / 60))
  else
    printf '%s seconds' "$seconds"
  fi
}

# The names of the app settings in deploy.sh's APP_SETTINGS list ("NAME=default" lines), read from the
# file so that teardown.sh accepts the same env file without keeping a second copy of the list.
app_setting_names_in() {
  sed -n '/^APP_SETTINGS=(/,/^)/s/^[[:space:]]*"\([A-Z][A-Z0-9_]*\)=.*/\1/p' "$1"
}

is_config_var() {
  local name="$1" known
  for known in "${CONFIG_VARS[@]}" "${APP_SETTING_NAMES[@]}"; do
    [[ "$known" == "$name" ]] && return 0
  done
  return 1
}

# load_env_file PATH: KEY=VALUE lines (optionally "export KEY=VALUE", optionally quoted). The file is
# parsed, never executed. A variable already set in the environment wins over the file, so secrets can
# be passed per run; flags win over both.
load_env_file() {
  local path="$1" line key value lineno=0
  [[ -f "$path" ]] || die "env file not found: $path"
  while IFS= read -r line || [[ -n "$line" ]]; do
    lineno=$((lineno + 1))
    line="${line#"${line%%[![:space:]]*}"}"
    [[ -z "$line" || "$line" == \#* ]] && continue
    line="${line#export }"
    [[ "$line" == *=* ]] || die "$path:$lineno: expected KEY=VALUE"
    key="${line%%=*}"
    value="${line#*=}"
    is_config_var "$key" || die "$path:$lineno: unknown setting '$key' (see deploy/deploy.env.example)"
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    if [[ -z "${!key+set}" ]]; then
      printf -v "$key" '%s' "$value"
    fi
  done <"$path"
}

# A short stable number from a string (6 digits), for names that must be unique or shortened.
short_hash() {
  printf '%s' "$1" | cksum | awk '{ printf "%06d", $1 % 1000000 }'
}

# A short stable suffix from the resource group and app names, so derived global names (storage
# account, key vault) are unlikely to collide with someone else's and the same on every run.
name_suffix() {
  short_hash "$RESOURCE_GROUP/$APP_NAME"
}

# Lower-case letters and digits of $1, at most $2 characters.
alnum_prefix() {
  local cleaned
  cleaned="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9')"
  printf '%s' "${cleaned:0:$2}"
}

# fit_name NAME MAX: NAME when it has at most MAX characters; otherwise its start, a hyphen and a hash
# of the whole name, MAX characters in all. Derived names stay valid for long app names (an event
# subscription name has at most 64 characters, an App Service plan name 60), distinct, and the same on
# every run, so deploy and teardown find the same resources.
fit_name() {
  local name="$1" max="$2"
  if ((${#name} <= max)); then
    printf '%s' "$name"
    return
  fi
  local head="${name:0:max-7}"
  while [[ "$head" == *- ]]; do
    head="${head%-}"
  done
  printf '%s-%s' "$head" "$(short_hash "$name")"
}

# Defaults shared by deploy and teardown (both must derive the same names).
apply_common_defaults() {
  # PLAN was the hosting plan's name before --plan (deploy.sh's preview) existed; env files keep working.
  if [[ -z "${HOSTING_PLAN:-}" && -n "${PLAN:-}" ]]; then
    warn "PLAN=$PLAN: the setting is now called HOSTING_PLAN (PLAN still works for now)"
    HOSTING_PLAN="$PLAN"
  fi
  HOSTING_PLAN="${HOSTING_PLAN:-flex}"
  IMAGES_CONTAINER="${IMAGES_CONTAINER:-product-images}"
  SYNC_SHARD_QUEUE="${SYNC_SHARD_QUEUE:-image-sync-shards}"
  PRODUCT_SYNC_QUEUE="${PRODUCT_SYNC_QUEUE:-image-sync-products}"
  SYNC_STATE_CONTAINER="${SYNC_STATE_CONTAINER:-image-sync-state}"
  RUN_HISTORY_CONTAINER="${RUN_HISTORY_CONTAINER:-image-sync-runs}"
  RENDITIONS_CONTAINER="${RENDITIONS_CONTAINER:-image-sync-renditions}"
  if [[ -n "${RESOURCE_GROUP:-}" && -n "${APP_NAME:-}" ]]; then
    local suffix
    suffix="$(name_suffix)"
    HOST_STORAGE_ACCOUNT="${HOST_STORAGE_ACCOUNT:-st$(alnum_prefix "$APP_NAME" 16)$suffix}"
    KEY_VAULT_NAME="${KEY_VAULT_NAME:-kv$(alnum_prefix "$APP_NAME" 16)$suffix}"
  fi
  # The app's custom role on the images (roles.sh): custom role names are unique in a tenant, and a
  # storage account name is globally unique.
  IMAGES_ROLE_NAME="Image Sync Image Reader and Tagger (${IMAGES_STORAGE_ACCOUNT:-})"
  local app="${APP_NAME:-app}"
  PREMIUM_PLAN_NAME="$(fit_name "$app-plan" 60)"
  BLOB_CREATED_SUBSCRIPTION="$(fit_name "$app-blob-created" 64)"
  BLOB_DELETED_SUBSCRIPTION="$(fit_name "$app-blob-deleted" 64)"
  LOG_WORKSPACE_NAME="$(fit_name "$app-logs" 63)"
  APP_INSIGHTS_NAME="$(fit_name "$app-insights" 255)"
  ACTION_GROUP_NAME="$(fit_name "$app-alerts" 255)"
  # The app's own queues (the shards, the product syncs and their poison queues) and the host's
  # poison queue for blobs that failed 5 times.
  APP_QUEUES=("$SYNC_SHARD_QUEUE" "$SYNC_SHARD_QUEUE-poison" "$PRODUCT_SYNC_QUEUE" "$PRODUCT_SYNC_QUEUE-poison")
  QUEUES=("${APP_QUEUES[@]}" "$BLOB_TRIGGER_POISON_QUEUE")
  POISON_QUEUES=("$SYNC_SHARD_QUEUE-poison" "$PRODUCT_SYNC_QUEUE-poison" "$BLOB_TRIGGER_POISON_QUEUE")
  # The containers the app writes to (per-product leases and pending marks; run reports; web renditions).
  APP_CONTAINERS=("$SYNC_STATE_CONTAINER" "$RUN_HISTORY_CONTAINER" "$RENDITIONS_CONTAINER")
}

require_vars() {
  local missing=() name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  if ((${#missing[@]})); then
    die "missing settings: ${missing[*]} (set them in the env file, the environment, or with flags; see --help)"
  fi
}

valid_container_name() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$ && "$1" != *--* ]]
}

validate_names() {
  [[ "$APP_NAME" =~ ^[A-Za-z0-9][A-Za-z0-9-]{0,58}[A-Za-z0-9]$ ]] \
    || die "APP_NAME '$APP_NAME': 2-60 letters, digits and hyphens, not starting or ending with a hyphen"
  local account
  for account in HOST_STORAGE_ACCOUNT IMAGES_STORAGE_ACCOUNT; do
    [[ "${!account}" =~ ^[a-z0-9]{3,24}$ ]] \
      || die "$account '${!account}': 3-24 lower-case letters and digits"
  done
  [[ "$KEY_VAULT_NAME" =~ ^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$ && "$KEY_VAULT_NAME" != *--* ]] \
    || die "KEY_VAULT_NAME '$KEY_VAULT_NAME': 3-24 letters, digits and single hyphens, starting with a letter"
  local container
  for container in IMAGES_CONTAINER SYNC_STATE_CONTAINER RUN_HISTORY_CONTAINER RENDITIONS_CONTAINER; do
    valid_container_name "${!container}" \
      || die "$container '${!container}': 3-63 lower-case letters, digits and single hyphens"
  done
  if [[ "$SYNC_STATE_CONTAINER" == "$IMAGES_CONTAINER" || "$RUN_HISTORY_CONTAINER" == "$IMAGES_CONTAINER" \
    || "$SYNC_STATE_CONTAINER" == "$RUN_HISTORY_CONTAINER" ]]; then
    die "IMAGES_CONTAINER, SYNC_STATE_CONTAINER and RUN_HISTORY_CONTAINER must be three different containers"
  fi
  local other
  for other in IMAGES_CONTAINER SYNC_STATE_CONTAINER RUN_HISTORY_CONTAINER; do
    [[ "$RENDITIONS_CONTAINER" != "${!other}" ]] || die "RENDITIONS_CONTAINER must differ from $other"
  done
  local queue
  for queue in SYNC_SHARD_QUEUE PRODUCT_SYNC_QUEUE; do
    [[ "${!queue}" =~ ^[a-z0-9][a-z0-9-]{1,55}[a-z0-9]$ && "${!queue}" != *--* ]] \
      || die "$queue '${!queue}': 3-57 lower-case letters, digits and single hyphens (room for -poison)"
  done
  [[ "$SYNC_SHARD_QUEUE" != "$PRODUCT_SYNC_QUEUE" ]] || die "SYNC_SHARD_QUEUE and PRODUCT_SYNC_QUEUE must differ"
  case "$HOSTING_PLAN" in
    flex | consumption | premium) ;;
    *) die "HOSTING_PLAN '$HOSTING_PLAN': one of flex, consumption, premium" ;;
  esac
}

# The images account: "<id>\t<resource group>\t<location>\t<our tag>" when it exists, nothing when it
# does not. With IMAGES_RESOURCE_GROUP it looks there only; without, anywhere in the subscription.
find_images_account() {
  local query="[id, resourceGroup, location, tags.\"$MANAGED_TAG_KEY\"]"
  local rc=0 out
  if [[ -n "${IMAGES_RESOURCE_GROUP:-}" ]]; then
    out="$(az_read storage account show --name "$IMAGES_STORAGE_ACCOUNT" \
      --resource-group "$IMAGES_RESOURCE_GROUP" --query "$query" --output tsv)" || rc=$?
    case "$rc" in
      0) printf '%s\n' "$out" | paste -s - ;;
      3) ;;
      *) die "could not read storage account $IMAGES_STORAGE_ACCOUNT (exit $rc)" ;;
    esac
  else
    out="$(az_read storage account list --query "[?name=='$IMAGES_STORAGE_ACCOUNT'] | [0].$query" \
      --output tsv)" || rc=$?
    case "$rc" in
      0) printf '%s' "$out" | paste -s - | sed '/^$/d' ;;
      3) ;;
      *) die "could not list storage accounts (exit $rc)" ;;
    esac
  fi
}

lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

# Custom roles by definition id (lower-case GUID), as a script finds or creates them.
declare -A CUSTOM_ROLE_NAMES=()

# The built-in roles the scripts assign, by the ids Azure gives them everywhere ("Azure built-in
# roles"): the role assignments API returns the id, not the name.
declare -A BUILTIN_ROLE_NAMES=(
  [2a2b9908-6ea1-4ae2-8e65-a410df84e7d1]="Storage Blob Data Reader"
  [ba92f5b4-2d11-453d-a403-e96b0029c9fe]="Storage Blob Data Contributor"
  [b7e6dc6d-f1e8-4753-8033-0f276bb0955b]="Storage Blob Data Owner"
  [db58b8e5-c6ad-4a2a-8342-4190687cbf4a]="Storage Blob Delegator"
  [974c5e8b-45b9-4653-ba55-5f855dd0fb88]="Storage Queue Data Contributor"
  [4633458b-17de-408a-b874-0445c86b69e6]="Key Vault Secrets User"
  [17d1049b-9a84-46fb-8f53-869881c3d3ab]="Storage Account Contributor"
  [0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3]="Storage Table Data Contributor"
  [b86a8fe4-44ce-4948-aee5-eccb2c155cd7]="Key Vault Secrets Officer"
)

# role_assignments_of PRINCIPAL SCOPE: the principal's role assignments at, above and below SCOPE, as
# "id<tab>role name<tab>scope" lines (a role in neither BUILTIN_ROLE_NAMES nor CUSTOM_ROLE_NAMES, the
# custom roles a script has looked up, shows its definition id). The
# REST API's principalId filter covers the scopes below (containers, queues), and it needs only
# roleAssignments/read on SCOPE: `az role assignment list --all` would need it on the whole
# subscription, which an owner of the resource group alone does not have.
role_assignments_of() {
  local principal="$1" scope="$2" listing id definition assigned
  listing="$(az rest --method get \
    --url "$scope/providers/Microsoft.Authorization/roleAssignments?api-version=2022-04-01&\$filter=principalId%20eq%20'$principal'" \
    --query "value[].[id, properties.roleDefinitionId, properties.scope]" --output tsv)" \
    || die "could not list the role assignments of $principal on $(scope_label "$scope")"
  while IFS=$'\t' read -r id definition assigned; do
    [[ -n "$id" ]] || continue
    definition="$(lower "${definition##*/}")"
    printf '%s\t%s\t%s\n' "$id" "${BUILTIN_ROLE_NAMES[$definition]:-${CUSTOM_ROLE_NAMES[$definition]:-$definition}}" "$assigned"
  done <<<"$listing"
}

# --- The Azure CLI and the signed-in principal ------------------------------------------------------

SUBSCRIPTION_ID=""
LOGIN_NAME=""
LOGIN_TYPE=""

# Stops unless az is installed, at least AZ_MIN_VERSION and logged in; sets SUBSCRIPTION_ID.
require_az() {
  command -v az >/dev/null || die "the Azure CLI (az) is not installed: https://aka.ms/azcli (version $AZ_MIN_VERSION or newer)"
  local version
  version="$(az version --query '"azure-cli"' --output tsv 2>/dev/null)" || true
  [[ -n "$version" ]] || die "could not read the Azure CLI version ('az version'): version $AZ_MIN_VERSION or newer is needed"
  python3 "$SCRIPT_DIR/azhelp.py" version-at-least "$version" "$AZ_MIN_VERSION" \
    || die "Azure CLI $version is too old: version $AZ_MIN_VERSION or newer is needed ('az upgrade')"
  local account
  account="$(az account show --query "[id, user.type, user.name]" --output tsv)" \
    || die "not logged in: run 'az login' (and 'az account set --subscription ...')"
  SUBSCRIPTION_ID="$(sed -n 1p <<<"$account")"
  LOGIN_TYPE="$(sed -n 2p <<<"$account")"
  LOGIN_NAME="$(sed -n 3p <<<"$account")"
}

# The signed-in principal's object id, from the "oid" claim of its Azure Resource Manager token: that
# works for users, service principals and managed identities alike, and needs no Microsoft Graph
# permission (az ad signed-in-user show / az ad sp show need Graph, and the latter cannot resolve a
# managed identity login at all). The token goes from az straight into the decoder through a pipe; it
# is never stored, printed or put on a command line.
signed_in_object_id() {
  az account get-access-token --query accessToken --output tsv | python3 "$SCRIPT_DIR/azhelp.py" token-oid
}

# --- Rights -----------------------------------------------------------------------------------------
# Each script records what it needs (need SCOPE ACTION WHY), then check_rights asks Azure for the
# signed-in principal's effective permissions at each scope (the ARM permissions API, which covers
# group memberships and inherited assignments but not deny assignments or conditions) and stops,
# naming every missing right, before anything is changed. The API is GET <scope>/providers/
# Microsoft.Authorization/permissions: azure-rest-api-specs defines it for resource groups and
# resources, and Microsoft's "Use Resource Manager authentication API" article shows it on a
# subscription.

NEED_SCOPES=()
NEED_ACTIONS=()
NEED_WHYS=()

need() {
  NEED_SCOPES+=("$1")
  NEED_ACTIONS+=("$2")
  NEED_WHYS+=("$3")
}

scope_label() {
  local scope="$1"
  case "$(lower "$scope")" in
    */providers/microsoft.storage/storageaccounts/*) printf 'storage account %s' "${scope##*/}" ;;
    */providers/*) printf '%s' "${scope#*/providers/}" ;;
    */resourcegroups/*) printf 'resource group %s' "${scope##*/}" ;;
    *) printf 'subscription %s' "${scope##*/}" ;;
  esac
}

print_needed_rights() {
  local i
  for i in "${!NEED_ACTIONS[@]}"; do
    note "${NEED_ACTIONS[$i]} on $(scope_label "${NEED_SCOPES[$i]}"): ${NEED_WHYS[$i]}"
  done
}

check_rights() {
  ((${#NEED_SCOPES[@]})) || return 0
  local scopes=() scope i missing_lines=() permissions missing action
  mapfile -t scopes < <(printf '%s\n' "${NEED_SCOPES[@]}" | awk '!seen[tolower($0)]++')
  for scope in "${scopes[@]}"; do
    if ! permissions="$(az rest --method get \
      --url "$scope/providers/Microsoft.Authorization/permissions?api-version=2022-04-01" --output json)"; then
      warn "could not read your permissions on $(scope_label "$scope"): not checked (Azure will refuse what you may not do)"
      continue
    fi
    local actions=()
    for i in "${!NEED_SCOPES[@]}"; do
      [[ "$(lower "${NEED_SCOPES[$i]}")" == "$(lower "$scope")" ]] && actions+=("${NEED_ACTIONS[$i]}")
    done
    missing="$(python3 "$SCRIPT_DIR/azhelp.py" missing-actions "${actions[@]}" <<<"$permissions")"
    while IFS= read -r action; do
      [[ -n "$action" ]] || continue
      for i in "${!NEED_SCOPES[@]}"; do
        if [[ "$(lower "${NEED_SCOPES[$i]}")" == "$(lower "$scope")" && "${NEED_ACTIONS[$i]}" == "$action" ]]; then
          missing_lines+=("$action on $(scope_label "$scope"): ${NEED_WHYS[$i]}")
        fi
      done
    done <<<"$missing"
  done
  if ((${#missing_lines[@]})); then
    printf 'ERROR: %s is missing rights this run needs; nothing was changed:\n' "${LOGIN_NAME:-the signed-in principal}" >&2
    printf '  - %s\n' "${missing_lines[@]}" >&2
    printf 'See "Permissions" in docs/deploy.md for the roles that grant them.\n' >&2
    exit 1
  fi
}
