# shellcheck shell=bash disable=SC2034  # globals set here are read by the other steps of deploy.sh
# deploy.sh's Azure Monitor step: the resources deploy/monitoring.py defines (workspace, Application
# Insights, action group, alert rules), written only where they differ. Sourced by deploy.sh.

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
