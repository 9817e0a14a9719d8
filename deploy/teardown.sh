#!/usr/bin/env bash
# Remove what deploy/deploy.sh created, and only that: everything it creates carries the tag
# image-sync-app=<app> (queues and containers: the metadata image_sync_app=<app>), and this script
# checks it before deleting anything. See "Teardown" in docs/deploy.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$SCRIPT_DIR/lib.sh"

usage() {
  cat <<'EOF'
Usage: deploy/teardown.sh [--env-file PATH] [options]

Removes what deploy.sh created, checking its tag (image-sync-app=<app>) on each resource first:

- If deploy.sh created the resource group, the group is deleted with everything in it: function app,
  plan, host storage, Application Insights and its workspace, alert rules, Key Vault (soft-deleted:
  see --purge-key-vault) and, if deploy created it there, the images storage account WITH ALL ITS
  IMAGES. Anything else in the group is named before you confirm.
- If the group existed before, only the resources tagged as the deploy's are deleted; the group and
  everything else in it stay.
- An images account the deploy did not create is never deleted or reconfigured: only what the deploy
  added to it is removed - the Event Grid subscriptions, the system topic if the deploy created it and
  nothing else uses it, the app's role assignments, and the queues and containers the deploy created
  (never the images container, and never webjobs-blobtrigger-poison, which every blob-triggered app on
  the account shares).

At the end it lists what it left in place.

Options (same names and env file as deploy.sh; flags win over the environment, which wins over the file):
  --env-file PATH              the env file used for deploy
  -g, --resource-group NAME    [RESOURCE_GROUP]
  -n, --app-name NAME          [APP_NAME]
  --images-account NAME        [IMAGES_STORAGE_ACCOUNT]
  --images-resource-group NAME [IMAGES_RESOURCE_GROUP]
  --key-vault NAME             [KEY_VAULT_NAME] (default derived as in deploy.sh)
  --purge-key-vault            purge the soft-deleted vault afterwards, freeing its name at once
                               (otherwise a later deploy.sh recovers it, secrets included); needs
                               a subscription-scope right, see "Permissions" in docs/deploy.md
  --no-wait                    do not wait for the resource group deletion to finish
  --yes                        do not ask for confirmation
  --dry-run                    print the az commands that would change something, run nothing
                               (no az call at all; assumes the deploy created the resource group,
                               and that the images account is in it unless IMAGES_RESOURCE_GROUP
                               names another)
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
  mapfile -t APP_SETTING_NAMES < <(app_setting_names_in "$SCRIPT_DIR/deploy.sh")
  load_env_and_flags
  require_vars RESOURCE_GROUP APP_NAME IMAGES_STORAGE_ACCOUNT
  apply_common_defaults
}

SUBSCRIPTION_ID="<subscription-id>"
RG_EXISTS=0
RG_OURS=0
ACCOUNT_ID=""
ACCOUNT_RG=""
ACCOUNT_OURS=0
LEFT=()

discover() {
  if resource_exists group show --name "$RESOURCE_GROUP"; then
    RG_EXISTS=1
    local tag
    tag="$(az group show --name "$RESOURCE_GROUP" --query "tags.\"$MANAGED_TAG_KEY\"" --output tsv)"
    [[ "$tag" == "$APP_NAME" ]] && RG_OURS=1
  fi
  local found _location tag=""
  found="$(find_images_account)"
  IFS=$'\t' read -r ACCOUNT_ID ACCOUNT_RG _location tag <<<"$found"
  [[ -n "$ACCOUNT_ID" && "$tag" == "$APP_NAME" ]] && ACCOUNT_OURS=1
  if [[ -n "$ACCOUNT_ID" ]]; then
    IMAGES_ROLE_ID="$(az_read role definition list --custom-role-only true --name "$IMAGES_ROLE_NAME" \
      --scope "$ACCOUNT_ID" --query "[0].id" --output tsv)" \
      || die "could not read the role definitions on storage account $IMAGES_STORAGE_ACCOUNT"
  fi
  return 0
}

IMAGES_ROLE_ID=""

# The deploy's custom role on the images (deploy/roles.sh), once no assignment of it is left: it grants
# nothing by itself, but its name is taken in the tenant. Azure refuses while another app's identity still
# holds it (two deployments on one images account share it); then it stays, and is said to.
delete_images_role() {
  [[ -n "$IMAGES_ROLE_ID" || "$DRY_RUN" == 1 ]] || return 0
  if ((NO_WAIT)); then
    LEFT+=("custom role '$IMAGES_ROLE_NAME' (the deletion was not waited for: run teardown again once it is done)")
    return 0
  fi
  log "Role definition $IMAGES_ROLE_NAME: deleting"
  if ! az_change rest --method delete \
    --url "${IMAGES_ROLE_ID:-<id of role definition $IMAGES_ROLE_NAME>}?api-version=2022-04-01" --output none; then
    warn "role definition '$IMAGES_ROLE_NAME' was not deleted (another app's identity may still hold it)"
    LEFT+=("custom role '$IMAGES_ROLE_NAME' (still assigned, or not deletable by you)")
  fi
}

plan_rights() {
  local sub="/subscriptions/$SUBSCRIPTION_ID" rg="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP"
  if ((RG_OURS)); then
    need "$rg" Microsoft.Resources/subscriptions/resourceGroups/delete "delete resource group $RESOURCE_GROUP"
  elif ((RG_EXISTS)); then
    need "$rg" Microsoft.Web/sites/delete "delete the function app"
    need "$rg" Microsoft.Storage/storageAccounts/delete "delete the storage accounts the deploy created"
    need "$rg" Microsoft.KeyVault/vaults/delete "delete the Key Vault"
    need "$rg" Microsoft.Insights/components/delete "delete Application Insights"
  fi
  if [[ -n "$ACCOUNT_ID" ]] && ((!ACCOUNT_OURS)); then
    need "$ACCOUNT_ID" Microsoft.Authorization/roleAssignments/delete "remove the app's roles on the images account"
    need "$ACCOUNT_ID" Microsoft.Storage/storageAccounts/queueServices/queues/delete "delete the queues the deploy created"
    need "$sub/resourceGroups/$ACCOUNT_RG" Microsoft.EventGrid/systemTopics/eventSubscriptions/delete \
      "delete the app's event subscriptions on the images account"
  fi
  if [[ -n "$IMAGES_ROLE_ID" ]]; then
    need "$ACCOUNT_ID" Microsoft.Authorization/roleDefinitions/delete \
      "delete the custom role '$IMAGES_ROLE_NAME' the deploy defined"
  fi
  if ((PURGE_KEY_VAULT)); then
    # Subscription-level rights for soft-deleted vaults, as listed in Microsoft's "Azure Key Vault
    # recovery management with soft delete and purge protection".
    need "$sub" Microsoft.KeyVault/locations/deletedVaults/read "find the soft-deleted vault (a subscription-scope right)"
    need "$sub" Microsoft.KeyVault/locations/deletedVaults/purge/action "purge Key Vault $KEY_VAULT_NAME (a subscription-scope right)"
    need "$sub" Microsoft.KeyVault/locations/operationResults/read "follow the purge to its end (a subscription-scope right)"
  fi
}

# The Event Grid side on the images account: the app's two subscriptions, and the system topic when
# the deploy created it (tag) and nothing else subscribes to it.
clean_event_grid() {
  local account_id="$1" topics name source rg tag topic="" topic_rg="" topic_tag=""
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
    topic_rg="${IMAGES_RESOURCE_GROUP:-$RESOURCE_GROUP}"
    topic_tag="$APP_NAME"
  fi
  [[ -n "$topic" ]] || return 0
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
    LEFT+=("Event Grid system topic $topic (not created by this deployment)")
  elif [[ -n "$remaining" ]]; then
    LEFT+=("Event Grid system topic $topic (created by this deployment, still used by: $(paste -s -d ' ' <<<"$remaining"))")
  else
    log "Event Grid system topic $topic: deleting (created by this deployment, now unused)"
    az_change eventgrid system-topic delete --name "$topic" --resource-group "$topic_rg" --yes --output none
  fi
}

# Remove the deploy's traces from an images account that is not ours to delete.
clean_foreign_images_account() {
  local account_id="$1"
  log "Images account $IMAGES_STORAGE_ACCOUNT was not created by this deployment: removing only what the deploy added to it"
  clean_event_grid "$account_id"
  clean_foreign_queues_and_containers "$account_id"
  local principal=""
  principal="$(az_read functionapp identity show --name "$APP_NAME" --resource-group "$RESOURCE_GROUP" \
    --query principalId --output tsv 2>/dev/null || true)"
  if [[ "$DRY_RUN" == 1 ]]; then
    principal="<principal-id of $APP_NAME>"
    print_az role assignment delete --ids "<each assignment of $principal under $account_id>"
    return
  fi
  if [[ -z "$principal" ]]; then
    warn "function app $APP_NAME has no identity (already deleted?): check $IMAGES_STORAGE_ACCOUNT's access control for leftover role assignments"
    LEFT+=("role assignments of the deleted app's identity on $IMAGES_STORAGE_ACCOUNT, if any (its identity is gone)")
    return
  fi
  local assignments id _role scope ids=() account
  account="$(lower "$account_id")"
  assignments="$(role_assignments_of "$principal" "$account_id")"
  while IFS=$'\t' read -r id _role scope; do
    scope="$(lower "$scope")"
    if [[ -n "$id" && ("$scope" == "$account" || "$scope" == "$account/"*) ]]; then
      ids+=("$id")
    fi
  done <<<"$assignments"
  if ((${#ids[@]})); then
    log "Role assignments of $APP_NAME on $IMAGES_STORAGE_ACCOUNT: deleting ${#ids[@]}"
    az_change role assignment delete --ids "${ids[@]}" --output none
  fi
}

# The app's queues and containers that carry the deploy's metadata mark. The images container holds the
# customer's images and the blob trigger's poison queue is shared: both always stay.
clean_foreign_queues_and_containers() {
  local account_id="$1" container queue mark
  LEFT+=("container $IMAGES_CONTAINER on $IMAGES_STORAGE_ACCOUNT (the images)")
  for container in "${APP_CONTAINERS[@]}"; do
    mark="$(az_read storage container-rm show --storage-account "$account_id" --name "$container" \
      --query "metadata.$MANAGED_METADATA_KEY" --output tsv 2>/dev/null)" || mark="<absent>"
    if [[ "$DRY_RUN" == 1 || "$mark" == "$APP_NAME" ]]; then
      log "Container $container: deleting (created by this deployment)"
      az_change storage container-rm delete --storage-account "$account_id" --name "$container" --yes --output none
    elif [[ "$mark" != "<absent>" ]]; then
      LEFT+=("container $container on $IMAGES_STORAGE_ACCOUNT (not created by this deployment)")
    fi
  done
  for queue in "${APP_QUEUES[@]}"; do
    local queue_id="$account_id/queueServices/default/queues/$queue"
    mark="$(az_read resource show --ids "$queue_id" --api-version "$STORAGE_API_VERSION" \
      --query "properties.metadata.$MANAGED_METADATA_KEY" --output tsv 2>/dev/null)" || mark="<absent>"
    if [[ "$DRY_RUN" == 1 || "$mark" == "$APP_NAME" ]]; then
      log "Queue $queue: deleting (created by this deployment)"
      az_change resource delete --ids "$queue_id" --api-version "$STORAGE_API_VERSION" --output none
    elif [[ "$mark" != "<absent>" ]]; then
      LEFT+=("queue $queue on $IMAGES_STORAGE_ACCOUNT (not created by this deployment)")
    fi
  done
  LEFT+=("queue $BLOB_TRIGGER_POISON_QUEUE on $IMAGES_STORAGE_ACCOUNT (shared by every blob-triggered app on the account)")
}

# Resource types in the order they can go: alert rules before the action group they notify, the app
# before its plan, the event subscriptions (deleted first) before their topic.
DELETE_ORDER=(
  microsoft.insights/scheduledqueryrules microsoft.insights/actiongroups microsoft.web/sites
  microsoft.web/serverfarms microsoft.eventgrid/systemtopics microsoft.insights/components
  microsoft.operationalinsights/workspaces microsoft.keyvault/vaults microsoft.storage/storageaccounts
)

# The resource group existed before the deploy: delete the resources tagged as the deploy's, one by one.
delete_tagged_resources() {
  local listing id type ordered=() kind
  listing="$(az resource list --resource-group "$RESOURCE_GROUP" \
    --query "[?tags.\"$MANAGED_TAG_KEY\"=='$APP_NAME'].[id, type]" --output tsv)"
  for kind in "${DELETE_ORDER[@]}"; do
    while IFS=$'\t' read -r id type; do
      [[ -n "$id" && "$(lower "$type")" == "$kind" ]] && ordered+=("$id|$kind")
    done <<<"$listing"
  done
  while IFS=$'\t' read -r id type; do
    if [[ -n "$id" ]] && ! printf '%s\n' "${DELETE_ORDER[@]}" | grep -qxF -- "$(lower "$type")"; then
      ordered+=("$id|$(lower "$type")")
    fi
  done <<<"$listing"
  local entry sites
  for entry in "${ordered[@]}"; do
    id="${entry%|*}"
    kind="${entry##*|}"
    if [[ "$kind" == microsoft.web/serverfarms ]]; then
      sites="$(az resource show --ids "$id" --query properties.numberOfSites --output tsv)"
      if [[ "$sites" != 0 ]]; then
        LEFT+=("plan ${id##*/} (created by this deployment, still hosting $sites app(s))")
        continue
      fi
    fi
    if [[ "$kind" == microsoft.eventgrid/systemtopics ]]; then
      local others
      others="$(az eventgrid system-topic event-subscription list --system-topic-name "${id##*/}" \
        --resource-group "$RESOURCE_GROUP" --query "[].name" --output tsv)"
      if [[ -n "$others" ]]; then
        LEFT+=("Event Grid system topic ${id##*/} (created by this deployment, still used by: $(paste -s -d ' ' <<<"$others"))")
        continue
      fi
    fi
    if [[ "$kind" == microsoft.storage/storageaccounts && "${id##*/}" == "$IMAGES_STORAGE_ACCOUNT" ]]; then
      warn "deleting storage account $IMAGES_STORAGE_ACCOUNT, created by this deployment, with all its images"
    fi
    log "${id##*/} ($kind): deleting"
    az_change resource delete --ids "$id" --output none
  done
  local remaining
  remaining="$(az resource list --resource-group "$RESOURCE_GROUP" --query "[].name" --output tsv)"
  LEFT+=("resource group $RESOURCE_GROUP (it existed before the deploy)${remaining:+, with: $(paste -s -d ' ' <<<"$remaining")}")
}

# confirm EXPECTED LABEL WHAT: asks for EXPECTED to be typed ("Type LABEL (EXPECTED) to WHAT").
confirm() {
  local expected="$1" label="$2" what="$3"
  ((ASSUME_YES)) && return
  [[ "$DRY_RUN" == 1 ]] && return
  if [[ ! -t 0 ]]; then
    die "not asking for confirmation without a terminal: pass --yes"
  fi
  local answer
  printf 'Type %s (%s) to %s: ' "$label" "$expected" "$what" >&2
  read -r answer
  [[ "$answer" == "$expected" ]] || die "not confirmed; nothing deleted"
}

main() {
  parse_args "$@"
  load_config
  exec 3>&1
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run: printing the commands that would change something"
    RG_EXISTS=1
    RG_OURS=1
    ACCOUNT_RG="${IMAGES_RESOURCE_GROUP:-$RESOURCE_GROUP}"
    ACCOUNT_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$ACCOUNT_RG/providers/Microsoft.Storage/storageAccounts/$IMAGES_STORAGE_ACCOUNT"
    [[ "$ACCOUNT_RG" == "$RESOURCE_GROUP" ]] && ACCOUNT_OURS=1
  else
    require_az
    discover
    plan_rights
    check_rights
  fi

  if ((RG_OURS)); then
    local others=""
    if [[ "$DRY_RUN" != 1 ]]; then
      others="$(az resource list --resource-group "$RESOURCE_GROUP" \
        --query "[?tags.\"$MANAGED_TAG_KEY\"!='$APP_NAME'].name" --output tsv)"
    fi
    if [[ -n "$ACCOUNT_ID" && "$(lower "$ACCOUNT_RG")" == "$(lower "$RESOURCE_GROUP")" ]]; then
      warn "storage account $IMAGES_STORAGE_ACCOUNT is in $RESOURCE_GROUP: it is deleted with the group, images included"
    fi
    if [[ -n "$others" ]]; then
      warn "resource group $RESOURCE_GROUP was created by the deploy, but also holds resources the deploy did not create; they are deleted with it: $(paste -s -d ' ' <<<"$others")"
    fi
    confirm "$RESOURCE_GROUP" "the resource group name" "delete it and everything in it"
  elif ((RG_EXISTS)); then
    log "Resource group $RESOURCE_GROUP was not created by the deploy (no tag $MANAGED_TAG_KEY=$APP_NAME): deleting only the resources tagged as this deployment's"
    if ((ACCOUNT_OURS)); then
      warn "storage account $IMAGES_STORAGE_ACCOUNT was created by this deployment: it is deleted, images included"
    fi
    confirm "$APP_NAME" "the app name" "delete what the deploy created in $RESOURCE_GROUP"
  elif [[ -n "$ACCOUNT_ID" ]] && ((!ACCOUNT_OURS)); then
    log "Resource group $RESOURCE_GROUP does not exist: removing what the deploy added to $IMAGES_STORAGE_ACCOUNT"
    confirm "$APP_NAME" "the app name" "remove what the deploy added to $IMAGES_STORAGE_ACCOUNT"
  else
    log "Resource group $RESOURCE_GROUP does not exist: nothing to delete"
  fi

  if [[ -n "$ACCOUNT_ID" ]] && ((!ACCOUNT_OURS)); then
    clean_foreign_images_account "$ACCOUNT_ID"
  elif [[ -n "$ACCOUNT_ID" ]] && ((RG_EXISTS && !RG_OURS)); then
    clean_event_grid "$ACCOUNT_ID"  # the account goes below; its topic and our subscriptions first
  fi

  if ((RG_OURS)); then
    log "Resource group $RESOURCE_GROUP: deleting$( ((NO_WAIT)) && printf ' (not waiting)' || true)"
    local wait_args=()
    if ((NO_WAIT)); then
      wait_args=(--no-wait)
    fi
    az_change group delete --name "$RESOURCE_GROUP" --yes "${wait_args[@]}" --output none
  elif ((RG_EXISTS)); then
    delete_tagged_resources
  fi
  delete_images_role

  if ((PURGE_KEY_VAULT)); then
    local deleted=""
    deleted="$(az_read keyvault list-deleted --resource-type vault \
      --query "[?name=='$KEY_VAULT_NAME'].name" --output tsv || true)"
    if [[ -n "$deleted" || "$DRY_RUN" == 1 ]]; then
      log "Key Vault $KEY_VAULT_NAME: purging"
      az_change keyvault purge --name "$KEY_VAULT_NAME" --output none
    fi
  elif ((RG_EXISTS)); then
    LEFT+=("Key Vault $KEY_VAULT_NAME, soft-deleted for its retention period (90 days by default): deploy.sh recovers it with its secrets; --purge-key-vault frees the name")
  fi
  if ((RG_EXISTS)); then
    LEFT+=("Log Analytics workspace $LOG_WORKSPACE_NAME, soft-deleted for 14 days (a deploy in that time recovers it)")
  fi
  if ((${#LEFT[@]})); then
    log "Left in place:"
    local item
    for item in "${LEFT[@]}"; do
      note "- $item"
    done
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    log "Dry run done: nothing was changed"
  else
    log "Done"
  fi
}

main "$@"
