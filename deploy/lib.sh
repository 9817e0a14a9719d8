# shellcheck shell=bash
# Shared by deploy.sh and teardown.sh: configuration loading, logging, and the two ways of calling az.
#
#   az_read   a query; in --dry-run it is not run and answers "not found" (exit 3, no output), so a dry
#             run shows the plan for a subscription where nothing exists yet.
#   az_change anything that creates, updates or deletes; in --dry-run it is printed, not run.
#
# Existence checks rely on az's documented exit codes: 0 found, 3 "resource not found" (HTTP 404),
# anything else is a real error and stops the script.

# Every variable deploy.env may set; anything else in the file is an error (it is most likely a typo).
# shellcheck disable=SC2034  # used by load_env_file
CONFIG_VARS=(
  RESOURCE_GROUP LOCATION APP_NAME PLAN PREMIUM_SKU FLEX_INSTANCE_MEMORY FLEX_MAXIMUM_INSTANCES
  HOST_STORAGE_ACCOUNT IMAGES_STORAGE_ACCOUNT IMAGES_RESOURCE_GROUP IMAGES_CONTAINER KEY_VAULT_NAME
  SYSTEM_TOPIC_NAME PROJECT_DIR
  IMAGE_PATH_PATTERN SAS_TTL_HOURS SAS_START_SKEW_MINUTES
  WALLIE_BASE_URL WALLIE_TENANT WALLIE_USERNAME WALLIE_PASSWORD WALLIE_BATCH_SIZE
  TRAEDE_BASE_URL TRAEDE_ACCESS_TOKEN TRAEDE_APP_KEY TRAEDE_PAYLOAD_KEY TRAEDE_COLOR_ATTRIBUTE
  HTTP_TIMEOUT_SECONDS HTTP_MAX_RETRIES HTTP_RETRY_BACKOFF_SECONDS HTTP_RETRY_MAX_SECONDS SYNC_CONCURRENCY SYNC_SCHEDULE SYNC_SHARD_PRODUCTS
  SYNC_SHARD_QUEUE PRODUCT_SYNC_QUEUE PRODUCT_SYNC_DELAY_SECONDS PRODUCT_LOCK_SECONDS SYNC_STATE_CONTAINER LOG_LEVEL
  DEPLOY_RETRY_ATTEMPTS DEPLOY_RETRY_SLEEP
)

# The tag put on everything the deploy creates, so teardown can tell its resources from a customer's.
MANAGED_TAG_KEY="image-sync-app"

DRY_RUN=0
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
  az "$@"
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

# retry DESCRIPTION COMMAND... : for steps that wait on Azure to catch up (role assignments take a few
# minutes to apply; a new identity takes a while to replicate; the host needs time to index functions).
retry() {
  local description="$1"
  shift
  local attempts="${DEPLOY_RETRY_ATTEMPTS:-20}" pause="${DEPLOY_RETRY_SLEEP:-15}" attempt=1
  while true; do
    if "$@"; then
      return 0
    fi
    if ((attempt >= attempts)); then
      die "gave up waiting for: $description (after $attempts attempts)"
    fi
    note "waiting for $description (attempt $attempt/$attempts, next in ${pause}s)"
    sleep "$pause"
    attempt=$((attempt + 1))
  done
}

is_config_var() {
  local name="$1" known
  for known in "${CONFIG_VARS[@]}"; do
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

# A short stable suffix from the resource group and app names, so derived global names (storage
# account, key vault) are unlikely to collide with someone else's and the same on every run.
name_suffix() {
  printf '%s/%s' "$RESOURCE_GROUP" "$APP_NAME" | cksum | awk '{ printf "%06d", $1 % 1000000 }'
}

# Lower-case letters and digits of $1, at most $2 characters.
alnum_prefix() {
  local cleaned
  cleaned="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9')"
  printf '%s' "${cleaned:0:$2}"
}

# Defaults shared by deploy and teardown (both must derive the same names).
apply_common_defaults() {
  PLAN="${PLAN:-flex}"
  IMAGES_CONTAINER="${IMAGES_CONTAINER:-product-images}"
  SYNC_SHARD_QUEUE="${SYNC_SHARD_QUEUE:-image-sync-shards}"
  if [[ -n "${RESOURCE_GROUP:-}" && -n "${APP_NAME:-}" ]]; then
    local suffix
    suffix="$(name_suffix)"
    HOST_STORAGE_ACCOUNT="${HOST_STORAGE_ACCOUNT:-st$(alnum_prefix "$APP_NAME" 16)$suffix}"
    KEY_VAULT_NAME="${KEY_VAULT_NAME:-kv$(alnum_prefix "$APP_NAME" 16)$suffix}"
  fi
  PREMIUM_PLAN_NAME="${APP_NAME:-app}-plan"
  BLOB_CREATED_SUBSCRIPTION="${APP_NAME:-app}-blob-created"
  BLOB_DELETED_SUBSCRIPTION="${APP_NAME:-app}-blob-deleted"
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
  [[ "$IMAGES_CONTAINER" =~ ^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$ && "$IMAGES_CONTAINER" != *--* ]] \
    || die "IMAGES_CONTAINER '$IMAGES_CONTAINER': 3-63 lower-case letters, digits and single hyphens"
  [[ "$SYNC_SHARD_QUEUE" =~ ^[a-z0-9][a-z0-9-]{1,55}[a-z0-9]$ && "$SYNC_SHARD_QUEUE" != *--* ]] \
    || die "SYNC_SHARD_QUEUE '$SYNC_SHARD_QUEUE': 3-57 lower-case letters, digits and single hyphens (room for -poison)"
  case "$PLAN" in
    flex | consumption | premium) ;;
    *) die "PLAN '$PLAN': one of flex, consumption, premium" ;;
  esac
}

# The images account: "<id>\t<resource group>\t<location>" when it exists, nothing when it does not.
# With IMAGES_RESOURCE_GROUP it looks there only; without, anywhere in the subscription.
find_images_account() {
  if [[ -n "${IMAGES_RESOURCE_GROUP:-}" ]]; then
    local rc=0 out
    out="$(az_read storage account show --name "$IMAGES_STORAGE_ACCOUNT" \
      --resource-group "$IMAGES_RESOURCE_GROUP" \
      --query "[id, resourceGroup, location]" --output tsv)" || rc=$?
    case "$rc" in
      0) printf '%s\n' "$out" | paste -s - ;;
      3) ;;
      *) die "could not read storage account $IMAGES_STORAGE_ACCOUNT (exit $rc)" ;;
    esac
  else
    local rc=0 out
    out="$(az_read storage account list \
      --query "[?name=='$IMAGES_STORAGE_ACCOUNT'] | [0].[id, resourceGroup, location]" \
      --output tsv)" || rc=$?
    case "$rc" in
      0) printf '%s' "$out" | paste -s - | sed '/^$/d' ;;
      3) ;;
      *) die "could not list storage accounts (exit $rc)" ;;
    esac
  fi
}

lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }
