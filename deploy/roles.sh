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
  retry "role assignment '$role'$(role_wait_hint "$role")" az_change role assignment create \
    --assignee-object-id "$principal" --assignee-principal-type "$type" \
    --role "$(role_reference "$role")" --scope "$scope" --output none
}

# What az's --role gets: the images role's definition id once it is known (a name is looked up in the
# role definitions, where a new custom role appears only minutes later), otherwise the role's name.
role_reference() {
  if [[ "$1" == "$IMAGES_ROLE_NAME" && -n "$IMAGES_ROLE_ID" && "$IMAGES_ROLE_ID" != "<"* ]]; then
    printf '%s' "$IMAGES_ROLE_ID"
  else
    printf '%s' "$1"
  fi
}

role_wait_hint() {
  if [[ "$1" == "$IMAGES_ROLE_NAME" ]] && ((IMAGES_ROLE_DEFINED)); then
    printf ' (a new custom role definition takes a few minutes to reach every region)'
  fi
}

# --- The app's role on the images ---------------------------------------------------------------------
# The app reads the images and keeps each one's web-ready verdict in a blob index tag (docs/images.md).
# Among the built-in roles only Storage Blob Data Owner may read and write tags (Reader and Contributor
# lack blobs/tags/*), and Owner also lets its holder write, delete and re-permission (set ACLs on) every
# image. So the deploy defines a custom role with exactly what the app does - Storage Blob Data Reader's
# rights plus the two tag rights - assignable on the images account only, and gives it on the images
# container. Custom role names are unique in a tenant, so the name carries the (globally unique) account
# name: two deployments on one images account share the definition, deployments on two accounts do not
# collide. IMAGES_DATA_ROLE=owner opts into the built-in Storage Blob Data Owner instead (broader) for
# deployers who may not define roles (Microsoft.Authorization/roleDefinitions/write).
IMAGES_ROLE_ACTIONS="Microsoft.Storage/storageAccounts/blobServices/containers/read"
IMAGES_ROLE_DATA_ACTIONS="Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read,Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read,Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write"
IMAGES_ROLE_ID=""          # the definition's resource id, once it exists (or a placeholder in a plan)
IMAGES_ROLE_DIFFERENCES="" # how the existing definition differs from IMAGES_ROLE_ACTIONS/DATA_ACTIONS
IMAGES_ROLE_DEFINED=0      # this run created or updated the definition

# The custom role is used with the Event Grid trigger unless IMAGES_DATA_ROLE=owner (the polling trigger
# needs Storage Blob Data Owner on the whole account anyway).
uses_images_role() {
  [[ "$BLOB_TRIGGER_SOURCE" == EventGrid && "$IMAGES_DATA_ROLE" == custom ]]
}

# The images role's definition as it is now, read in preflight (only reads): sets IMAGES_ROLE_ID and
# IMAGES_ROLE_DIFFERENCES when it exists. A new images account has none yet. Read with the owner opt-in
# too: an assignment of the role from an earlier deploy is then recognised, and removed.
find_images_role() {
  local account_id="${IMAGES_FOUND%%$'\t'*}" found=""
  [[ -n "$account_id" ]] || return 0
  found="$(az_read role definition list --custom-role-only true --name "$IMAGES_ROLE_NAME" \
    --scope "$account_id" --output json | python3 "$SCRIPT_DIR/azhelp.py" role-definition-check \
    "$IMAGES_ROLE_NAME" "$account_id" "$IMAGES_ROLE_ACTIONS" "$IMAGES_ROLE_DATA_ACTIONS")" \
    || die "could not read the role definitions on storage account $IMAGES_STORAGE_ACCOUNT"
  if [[ -n "$found" ]]; then
    IMAGES_ROLE_ID="${found%%$'\t'*}"
    IMAGES_ROLE_DIFFERENCES="${found#*$'\t'}"
    CUSTOM_ROLE_NAMES["$(lower "${IMAGES_ROLE_ID##*/}")"]="$IMAGES_ROLE_NAME"
  fi
}

# Whether this run has to create or update the definition (preflight then needs roleDefinitions/write).
images_role_needs_writing() {
  uses_images_role && [[ -z "$IMAGES_ROLE_ID" || -n "$IMAGES_ROLE_DIFFERENCES" ]]
}

# Creates the definition, or puts its rights back as they should be; the body goes to az in a private
# file (--role-definition @file).
ensure_images_role_definition() {
  uses_images_role || return 0
  local label="Role definition $IMAGES_ROLE_NAME"
  if [[ -n "$IMAGES_ROLE_ID" && -z "$IMAGES_ROLE_DIFFERENCES" ]]; then
    outcome unchanged "$label" "as it should be"
    return 0
  fi
  local file="$TMP_DIR/images-role.json" arg="@$TMP_DIR/images-role.json" verb=create
  if [[ -n "$IMAGES_ROLE_ID" ]]; then
    verb=update
    outcome change "$label" "putting its rights back (${IMAGES_ROLE_DIFFERENCES})" "$IMAGES_ROLE_DIFFERENCES"
  else
    outcome create "$label" "defining it on $IMAGES_STORAGE_ACCOUNT: read images, read and write their index tags" \
      "actions: $IMAGES_ROLE_ACTIONS" "dataActions: ${IMAGES_ROLE_DATA_ACTIONS//,/, }" \
      "assignable on storage account $IMAGES_STORAGE_ACCOUNT only"
  fi
  IMAGES_ROLE_DEFINED=1
  if [[ "$DRY_RUN" == 1 ]]; then
    arg="@<temporary file with the role definition as JSON>"
  else
    (umask 077 && python3 "$SCRIPT_DIR/azhelp.py" role-definition "$IMAGES_ROLE_NAME" "$IMAGES_ACCOUNT_ID" \
      "$IMAGES_ROLE_ACTIONS" "$IMAGES_ROLE_DATA_ACTIONS" ${IMAGES_ROLE_ID:+"$IMAGES_ROLE_ID"} >"$file")
  fi
  local id="" rc=0
  id="$(az_change role definition "$verb" --role-definition "$arg" --query id --output tsv 2>"$TMP_DIR/role-error")" \
    || rc=$?
  rm -f "$file"
  if ((rc)); then
    cat "$TMP_DIR/role-error" >&2
    if grep -q RoleDefinitionWithSameNameExists "$TMP_DIR/role-error"; then
      die "a custom role named '$IMAGES_ROLE_NAME' already exists but is not assignable on $IMAGES_STORAGE_ACCOUNT (left from an earlier account of that name?): delete it in the portal (Access control, Roles) or with 'az role definition delete --name \"$IMAGES_ROLE_NAME\" --custom-role-only true --scope <its assignable scope>', then deploy again"
    fi
    die "could not $verb the custom role '$IMAGES_ROLE_NAME' (it needs Microsoft.Authorization/roleDefinitions/write on storage account $IMAGES_STORAGE_ACCOUNT: Owner or User Access Administrator). Alternative: IMAGES_DATA_ROLE=owner gives the app the built-in Storage Blob Data Owner on the images container instead, which also lets it write, delete and re-permission every image"
  fi
  if simulating; then
    id="${IMAGES_ROLE_ID:-<id of the new role definition $IMAGES_ROLE_NAME>}"
  fi
  [[ -n "$id" ]] || die "no id from 'az role definition $verb'"
  IMAGES_ROLE_ID="$id"
  IMAGES_ROLE_DIFFERENCES=""
  CUSTOM_ROLE_NAMES["$(lower "${IMAGES_ROLE_ID##*/}")"]="$IMAGES_ROLE_NAME"
}

# The roles the app's identity needs, as "ROLE|SCOPE" lines. Sources: Microsoft's "Azure Blob storage
# trigger" permissions table and "Connecting to host storage with an identity". The Event Grid-sourced
# blob trigger only reads the blob it is given, and the web stage (WEB_IMAGES) keeps each image's verdict
# in a blob index tag on it: the images role above (IMAGES_ROLE_NAME, or Storage Blob Data Owner with
# IMAGES_DATA_ROLE=owner), scoped to the images container; the polling trigger (BLOB_TRIGGER_SOURCE=LogsAndContainerScan) keeps its receipts and leases there and
# needs Storage Blob Data Owner on the account. User-delegation SAS needs Storage Blob Delegator on the
# account. The app creates, leases and deletes blobs in SYNC_STATE_CONTAINER and writes reports to
# RUN_HISTORY_CONTAINER. The host's own account: HOST_ROLES, when the host reaches it by identity.
desired_app_roles() {
  local account="$IMAGES_ACCOUNT_ID" container role
  if [[ "$BLOB_TRIGGER_SOURCE" == EventGrid ]]; then
    if uses_images_role; then
      printf '%s\n' "$IMAGES_ROLE_NAME|$account/blobServices/default/containers/$IMAGES_CONTAINER"
    else
      printf '%s\n' "Storage Blob Data Owner|$account/blobServices/default/containers/$IMAGES_CONTAINER"
    fi
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
  for role in "${MANAGED_APP_ROLES[@]}" "$IMAGES_ROLE_NAME"; do
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
  declare -A have=() as_listed=()
  while IFS=$'\t' read -r id role scope; do
    [[ -n "$id" ]] || continue
    have["$(lower "$role|$scope")"]="$id"
    as_listed["$(lower "$role|$scope")"]="$role|$scope"
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
      line="${as_listed[$key]}"  # named as Azure lists it, not lower-cased
      outcome delete "Role ${line%%|*} for $APP_NAME on $(role_scope_label "${line#*|}")" "no longer needed, removing"
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
