# shellcheck shell=bash disable=SC2034  # globals set here are read by the other steps of deploy.sh
# deploy.sh's Key Vault steps: the vault, the partner secrets, and - last in a run - the app's Key Vault
# references. Sourced by deploy.sh.

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
