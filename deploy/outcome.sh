# shellcheck shell=bash
# What deploy.sh does to each resource. A deploy (or --dry-run) logs it as it goes. With --plan nothing
# is changed: the same steps run with every read, and this collects what each would have done - create,
# change (one detail line per setting or property that differs, secret values hidden), delete, or
# unchanged - and prints it as the plan at the end.

PLAN_LINES=()
declare -A PLAN_COUNTS=([create]=0 [change]=0 [delete]=0 [unchanged]=0)

# outcome ACTION WHAT [MESSAGE [DETAIL...]]: ACTION is create, change, delete or unchanged. A deploy logs
# "WHAT: MESSAGE" (by default: creating, updating, deleting, as configured) and each DETAIL as a note; a
# plan lists WHAT under its ACTION with the DETAILs below it.
outcome() {
  local action="$1" what="$2" message="${3:-}" detail
  local lines=("${@:4}")
  if [[ -z "$message" ]]; then
    case "$action" in
      create) message="creating" ;;
      change) message="updating" ;;
      delete) message="deleting" ;;
      *) message="as configured" ;;
    esac
  fi
  PLAN_COUNTS[$action]=$((PLAN_COUNTS[$action] + 1))
  if [[ "$PLAN_MODE" == 1 ]]; then
    PLAN_LINES+=("$(printf '  %-10s %s' "$action" "$what")")
    for detail in "${lines[@]}"; do
      PLAN_LINES+=("             $detail")
    done
    return
  fi
  log "$what: $message"
  for detail in "${lines[@]}"; do
    note "$detail"
  done
}

# The plan, on standard output (fd 3): every resource the deploy manages and what a deploy would do to it.
print_plan() {
  {
    printf 'Plan: what deploy/deploy.sh would do to %s (%s plan) in resource group %s.\n' \
      "$APP_NAME" "$HOSTING_PLAN" "$RESOURCE_GROUP"
    printf 'Read from subscription %s; nothing was changed.\n\n' "$SUBSCRIPTION_ID"
    printf '%s\n' "${PLAN_LINES[@]}"
    printf '\n%d to create, %d to change, %d to delete, %d unchanged.\n' "${PLAN_COUNTS[create]}" \
      "${PLAN_COUNTS[change]}" "${PLAN_COUNTS[delete]}" "${PLAN_COUNTS[unchanged]}"
  } >&3
}
