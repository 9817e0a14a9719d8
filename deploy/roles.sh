# shellcheck shell=bash disable=SC2034  # globals set here are read by the other steps of deploy.sh
# deploy.sh's role assignments: the one helper that gives a principal a role, and the app identity's
# roles on the images account, the vault and the host account. Sourced by deploy.sh.

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

# The roles the app's identity needs, as "ROLE|SCOPE" lines. Sources: Microsoft's "Azure Blob storage
# trigger" permissions table and "Connecting to host storage with an identity". The Event Grid-sourced
# blob trigger only reads the blob it is given, so the images need only read access to the container;
# the web stage (WEB_IMAGES) keeps each image's verdict in a blob index tag on it, and reading and writing
# tags is a right of Storage Blob Data Owner alone among the built-in roles (Reader and Contributor lack
# blobs/tags/*): Owner, scoped to the images container, the code never writing an original's bytes;
# the polling trigger (BLOB_TRIGGER_SOURCE=LogsAndContainerScan) keeps its receipts and leases there and
# needs Storage Blob Data Owner on the account. User-delegation SAS needs Storage Blob Delegator on the
# account. The app creates, leases and deletes blobs in SYNC_STATE_CONTAINER and writes reports to
# RUN_HISTORY_CONTAINER. The host's own account: HOST_ROLES, when the host reaches it by identity.
desired_app_roles() {
  local account="$IMAGES_ACCOUNT_ID" container role
  if [[ "$BLOB_TRIGGER_SOURCE" == EventGrid ]]; then
    printf '%s\n' "Storage Blob Data Owner|$account/blobServices/default/containers/$IMAGES_CONTAINER"
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
