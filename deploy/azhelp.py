"""Small helpers for deploy.sh and teardown.sh that bash does badly. Standard library only.

  version-at-least HAVE NEED     exit 0 when version HAVE >= NEED (e.g. 2.72.0 >= 2.72.0)
  token-oid                      the "oid" claim of the JWT on stdin (the signed-in principal's object id)
  missing-actions ACTION...      the ACTIONs (one a line) that the ARM permissions JSON on stdin does
                                 not grant
  matches DESIRED_FILE           exit 0 when the JSON on stdin holds everything in DESIRED_FILE
                                 (see matches())
  get DOTTED.PATH                the string at that path of the JSON on stdin (exit 1 if missing)
"""

import base64
import json
import re
import sys


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def version_at_least(have, need):
    return version_tuple(have) >= version_tuple(need)


def token_oid(token):
    """The object id in an access token. Only the payload is decoded: the signature is Azure's
    business, and the token came from the CLI's own login."""
    parts = token.strip().split(".")
    if len(parts) < 2:
        raise ValueError("not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload))
    return claims["oid"]


def _action_pattern(pattern):
    """ARM action patterns: case-insensitive, '*' matches any run of characters (slashes included)."""
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.IGNORECASE)


def granted(action, permissions):
    """Whether one of the permission entries grants ACTION: an entry grants what its actions match and
    its notActions do not (notActions subtract only from their own entry, as in Azure RBAC)."""
    for entry in permissions:
        allowed = any(_action_pattern(p).match(action) for p in entry.get("actions") or [])
        denied = any(_action_pattern(p).match(action) for p in entry.get("notActions") or [])
        if allowed and not denied:
            return True
    return False


def missing_actions(actions, permissions_json):
    document = json.loads(permissions_json)
    permissions = document.get("value", document) if isinstance(document, dict) else document
    return [action for action in actions if not granted(action, permissions)]


def matches(desired, actual):
    """True when ACTUAL holds DESIRED: every key of a desired object is in the actual one with a matching
    value (Azure adds read-only and default properties, so extra keys are fine), lists match item by
    item, and strings match without regard to case: Azure returns some values in another case than it
    was given (resource ids, SKU names such as 'pergb2018')."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        lowered = {str(k).lower(): v for k, v in actual.items()}
        return all(str(k).lower() in lowered and matches(v, lowered[str(k).lower()]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(
            matches(d, a) for d, a in zip(desired, actual, strict=True))
    if isinstance(desired, bool) or isinstance(actual, bool):
        return isinstance(desired, bool) and isinstance(actual, bool) and desired == actual  # True == 1 in Python
    if isinstance(desired, (int, float)) and isinstance(actual, (int, float)):
        return float(desired) == float(actual)
    if isinstance(desired, str) and isinstance(actual, str):
        return desired.lower() == actual.lower()
    return desired == actual


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "version-at-least":
        return 0 if version_at_least(args[0], args[1]) else 1
    if command == "token-oid":
        try:
            print(token_oid(sys.stdin.read()))
        except (ValueError, KeyError) as exc:
            print(f"could not read the object id from the access token: {exc}", file=sys.stderr)
            return 1
        return 0
    if command == "missing-actions":
        for action in missing_actions(args, sys.stdin.read()):
            print(action)
        return 0
    if command == "matches":
        with open(args[0], encoding="utf-8") as handle:
            desired = json.load(handle)
        # A resource's location cannot change, and Azure returns it normalised ("West Europe" ->
        # "westeurope"): it is not compared.
        desired.pop("location", None)
        text = sys.stdin.read()
        return 0 if text.strip() and matches(desired, json.loads(text)) else 1
    if command == "get":
        value = json.loads(sys.stdin.read() or "null")
        for key in args[0].split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value in (None, ""):
            return 1
        print(value)
        return 0
    print(f"azhelp.py: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
