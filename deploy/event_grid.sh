# shellcheck shell=bash disable=SC2034  # globals set here are read by the other steps of deploy.sh
# deploy.sh's Event Grid step: the system topic on the images account and the two subscriptions, created
# once the code runs. Sourced by deploy.sh.

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
        endpoint_arg="@<temporary file with the webhook URL and its key>"  # printed by --dry-run only
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
