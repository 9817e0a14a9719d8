#!/usr/bin/env bash
# Remove what deploy/deploy.sh created. See deploy/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"

usage() {
  cat <<'EOF'
Usage: deploy/teardown.sh [--env-file PATH] [options]

Deletes the deployment's resource group, and with it everything deploy.sh created there: function
app, plan, host storage, Application Insights, Key Vault (soft-deleted: see --purge-key-vault) and,
if deploy created it there, the images storage account WITH ALL ITS IMAGES.

When the images account lives in another resource group (a customer's existing account), it is
never deleted or reconfigured: only what the deploy added to it is removed first - the Event Grid
subscriptions, the system topic if the deploy created it and nothing else uses it, and the app's
role assignments on the account. Its container, queues and blobs stay.

Options (same names and env file as deploy.sh; flags win over the environment, which wins over the file):
  --env-file PATH              the env file used for deploy
  -g, --resource-group NAME    [RESOURCE_GROUP]
  -n, --app-name NAME          [APP_NAME]
  --images-account NAME        [IMAGES_STORAGE_ACCOUNT]
  --images-resource-group NAME [IMAGES_RESOURCE_GROUP]
  --key-vault NAME             [KEY_VAULT_NAME] (default derived as in deploy.sh)
  --purge-key-vault            purge the soft-deleted vault afterwards, freeing its name at once
                               (otherwise a later deploy.sh recovers it, secrets included)
  --no-wait                    do not wait for the resource group deletion to finish
  --yes                        do not ask for confirmation
  --dry-run                    print the az commands that would change something, run nothing
                               (no az call at all; assumes the images account is in the resource
                               group unless IMAGES_RESOURCE_GROUP names another)
  -h, --help                   this help
EOF
}

ASSUME_YES=0
PURGE_KEY_VAULT=0
NO_WAIT=0

parse_args() {
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --purge-key-vault) PURGE_KEY_VAULT=1; shift ;;
      --no-wait) NO_WAIT=1; shift ;;
      --yes | -y) ASSUME_YES=1; shift ;;
      *)
        parse_common_option "$@"
        ((COMMON_SHIFT)) || { usage >&2; die "unknown argument: $1"; }
        shift "$COMMON_SHIFT"
        ;;
    esac
  done
  if ((PURGE_KEY_VAULT && NO_WAIT)); then
    die "--purge-key-vault needs the deletion to finish first: drop --no-wait"
  fi
}

load_config() {
  load_env_and_flags
  require_vars RESOURCE_GROUP APP_NAME IMAGES_STORAGE_ACCOUNT
  apply_common_defaults
}

SUBSCRIPTION_ID="<subscription-id>"

# Remove the deploy's traces from an images account that is not ours to delete.
clean_foreign_images_account() {
  local account_id="$1"
  log "Images account $IMAGES_STORAGE_ACCOUNT is outside $RESOURCE_GROUP: removing only what the deploy added to it"
  local topics name source rg tag topic="" topic_rg="" topic_tag=""
  topics="$(az_read eventgrid system-topic list \
    --query "[].[name, source, resourceGroup, tags.\"$MANAGED_TAG_KEY\"]" --output tsv || true)"
  while IFS=$'\t' read -r name source rg tag; do
    if [[ -n "$name" && "$(lower "$source")" == "$(lower "$account_id")" ]]; then
      topic="$name"
      topic_rg="$rg"
      topic_tag="$tag"
    fi
  done <<<"$topics"
  if [[ "$DRY_RUN" == 1 ]]; then
    topic="${SYSTEM_TOPIC_NAME:-$IMAGES_STORAGE_ACCOUNT-events}"
    topic_rg="$IMAGES_RESOURCE_GROUP"
    topic_tag="$APP_NAME"
  fi
  if [[ -n "$topic" ]]; then
    local subscription
    for subscription in "$BLOB_CREATED_SUBSCRIPTION" "$BLOB_DELETED_SUBSCRIPTION"; do
      if [[ "$DRY_RUN" == 1 ]] || resource_exists eventgrid system-topic event-subscription show \
        --name "$subscription" --system-topic-name "$topic" --resource-group "$topic_rg"; then
        log "Event subscription $subscription: deleting"
        az_change eventgrid system-topic event-subscription delete --name "$subscription" \
          --system-topic-name "$topic" --resource-group "$topic_rg" --yes --output none
      fi
    done
    local remaining=""
    remaining="$(az_read eventgrid system-topic event-subscription list --system-topic-name "$topic" \
      --resource-group "$topic_rg" --query "[].name" --output tsv || true)"
    if [[ "$topic_tag" != "$APP_NAME" ]]; then
      note "system topic $topic: kept (not created by this deployment)"
    elif [[ -n "$remaining" ]]; then
      note "system topic $topic: kept (still used by: $(paste -s -d ' ' <<<"$remaining"))"
    else
      log "Event Grid system topic $topic: deleting (created by this deployment, now unused)"
      az_change eventgrid system-topic delete --name "$topic" --resource-group "$topic_rg" --yes --output none
    fi
  fi
  local principal=""
  principal="$(az_read functionapp identity show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query principalId --output tsv || true)"
  if [[ "$DRY_RUN" == 1 ]]; then
    principal="<principal-id of $APP_NAME>"
    print_az role assignment delete --ids "<each assignment of $principal under $account_id>"
    return
  fi
  if [[ -z "$principal" ]]; then
    warn "function app $APP_NAME has no identity (already deleted?): check $IMAGES_STORAGE_ACCOUNT's access control for leftover role assignments"
    return
  fi
  local assignments id scope ids=()
  assignments="$(az role assignment list --all --assignee-object-id "$principal" \
    --query "[].[id, scope]" --output tsv)"
  while IFS=$'\t' read -r id scope; do
    if [[ -n "$id" && "$(lower "$scope")" == "$(lower "$account_id")"* ]]; then
      ids+=("$id")
    fi
  done <<<"$assignments"
  if ((${#ids[@]})); then
    log "Role assignments of $APP_NAME on $IMAGES_STORAGE_ACCOUNT: deleting ${#ids[@]}"
    az_change role assignment delete --ids "${ids[@]}" --output none
  fi
}

confirm() {
  ((ASSUME_YES)) && return
  [[ "$DRY_RUN" == 1 ]] && return
  if [[ ! -t 0 ]]; then
    die "not asking for confirmation without a terminal: pass --yes"
  fi
  local answer
  printf 'Type the resource group name (%s) to delete it and everything in it: ' "$RESOURCE_GROUP" >&2
  read -r answer
  [[ "$answer" == "$RESOURCE_GROUP" ]] || die "not confirmed; nothing deleted"
}

main() {
  parse_args "$@"
  load_config
  exec 3>&1
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run: printing the commands that would change something"
  else
    command -v az >/dev/null || die "the Azure CLI (az) is not installed"
    SUBSCRIPTION_ID="$(az account show --query id --output tsv)" || die "not logged in: run 'az login'"
    if ! resource_exists group show --name "$RESOURCE_GROUP"; then
      log "Resource group $RESOURCE_GROUP does not exist: nothing to delete"
      return
    fi
  fi

  local found account_id account_rg _location
  if [[ "$DRY_RUN" == 1 ]]; then
    account_rg="${IMAGES_RESOURCE_GROUP:-$RESOURCE_GROUP}"
    account_id="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$account_rg/providers/Microsoft.Storage/storageAccounts/$IMAGES_STORAGE_ACCOUNT"
  else
    found="$(find_images_account)"
    IFS=$'\t' read -r account_id account_rg _location <<<"$found"
  fi

  if [[ -n "$account_id" && "$(lower "$account_rg")" == "$(lower "$RESOURCE_GROUP")" ]]; then
    warn "storage account $IMAGES_STORAGE_ACCOUNT is in $RESOURCE_GROUP: it is deleted with the group, images included"
  fi
  confirm
  if [[ -n "$account_id" && "$(lower "$account_rg")" != "$(lower "$RESOURCE_GROUP")" ]]; then
    clean_foreign_images_account "$account_id"
  fi

  log "Resource group $RESOURCE_GROUP: deleting$( ((NO_WAIT)) && printf ' (not waiting)' || true)"
  local wait_args=()
  if ((NO_WAIT)); then
    wait_args=(--no-wait)
  fi
  az_change group delete --name "$RESOURCE_GROUP" --yes ${wait_args[@]+"${wait_args[@]}"} --output none

  if ((PURGE_KEY_VAULT)); then
    local deleted=""
    deleted="$(az_read keyvault list-deleted --resource-type vault \
      --query "[?name=='$KEY_VAULT_NAME'].name" --output tsv || true)"
    if [[ -n "$deleted" || "$DRY_RUN" == 1 ]]; then
      log "Key Vault $KEY_VAULT_NAME: purging"
      az_change keyvault purge --name "$KEY_VAULT_NAME" --output none
    fi
  else
    note "Key Vault $KEY_VAULT_NAME stays soft-deleted for its retention period; deploy.sh recovers it, or purge it with --purge-key-vault"
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run done: nothing was changed"
  else
    log "Done"
  fi
}

main "$@"
