# shellcheck shell=bash disable=SC2034  # globals set here are read by the other steps of deploy.sh
# deploy.sh's preflight, sourced by deploy.sh. Everything here only reads. It stops before anything is
# created when az is too old, you are not logged in, an existing storage account cannot serve the app,
# or you lack a right this run needs.

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
  find_images_role
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
  if images_role_needs_writing; then
    # Owner and User Access Administrator have it; Role Based Access Control Administrator does not.
    need "${account_id:-$rg}" Microsoft.Authorization/roleDefinitions/write \
      "define the custom role '$IMAGES_ROLE_NAME' (read images, read and write their index tags), assignable on $IMAGES_STORAGE_ACCOUNT only; or set IMAGES_DATA_ROLE=owner to give the app the built-in Storage Blob Data Owner instead, which is broader (it may also write, delete and re-permission every image)"
  fi
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
