"""The app's role on the images: a custom role the deploy defines (read images, read and write their blob
index tags, nothing more) instead of the built-in Storage Blob Data Owner, which would also let the app
write, delete and re-permission every image.

Every az call goes through the real Azure CLI parser into the stateful fake Azure (fake_az.py), which keeps
role definitions, refuses what the deployer's rights do not allow and can hold a new definition back from
role assignments for a while, as Azure does while it replicates one.
"""

import pytest
from deploy_harness import assert_ok, command_of, is_mutating, parse_failures, run_script

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
ACCOUNT_ID = f"{SUB}/resourceGroups/rg-imgsync-test/providers/Microsoft.Storage/storageAccounts/stproductimgtest"
CONTAINER_SCOPE = f"{ACCOUNT_ID}/blobServices/default/containers/product-images"
ROLE_NAME = "Image Sync Image Reader and Tagger (stproductimgtest)"
BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
# Storage Blob Data Reader's rights ("Azure built-in roles": containers/read and blobs/read) plus the two tag rights.
EXPECTED = {"actions": ["Microsoft.Storage/storageAccounts/blobServices/containers/read"], "notActions": [],
            "dataActions": [f"{BLOBS}/read", f"{BLOBS}/tags/read", f"{BLOBS}/tags/write"], "notDataActions": []}
# Contributor plus Role Based Access Control Administrator: may create resources and role assignments,
# but not role definitions (RBAC Administrator's actions are roleAssignments/write and delete, */read).
CONTRIBUTOR_AND_RBAC_ADMIN = [
    {"actions": ["*"], "notActions": ["Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
                                      "Microsoft.Authorization/elevateAccess/Action"]},
    {"actions": ["Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleAssignments/delete",
                 "*/read"], "notActions": []},
]


def deploy(fake, env_file, project_dir, *args, **kwargs):
    return run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir, *args, **kwargs)


def app_roles(state):
    principal = state["apps"]["imgsync-test"]["identity"]["principalId"]
    return [r for r in state["roles"] if r["principalId"] == principal]


def images_roles(state):
    """The app's roles on the images account and below: (role, scope)."""
    return sorted((r["role"], r["scope"]) for r in app_roles(state) if r["scope"].startswith(ACCOUNT_ID))


def the_definition(state):
    definitions = [d for d in state["role_definitions"] if d["roleName"] == ROLE_NAME]
    assert len(definitions) == 1, state["role_definitions"]
    return definitions[0]


def permissions_of(definition):
    (entry,) = definition["permissions"]
    return {key: sorted(value) for key, value in entry.items()}


def assert_all_parsed(fake):
    failures = parse_failures(fake.calls())
    assert not failures, "\n".join(f"az {' '.join(c['argv'])}\n  {c.get('error')}" for c in failures)


def test_the_role_is_defined_once_with_exactly_the_rights_the_app_uses(flex_deployment):
    state = flex_deployment["state"]
    definition = the_definition(state)
    assert permissions_of(definition) == EXPECTED
    assert definition["assignableScopes"] == [ACCOUNT_ID], "assignable on the images account only"
    creates = [c for c in flex_deployment["first_calls"] if command_of(c) == "role definition create"]
    assert len(creates) == 1
    # the body went to az in a file, not as JSON on the command line
    assert creates[0]["argv"][creates[0]["argv"].index("--role-definition") + 1].startswith("@")
    assert f"Role definition {ROLE_NAME}: defining it on stproductimgtest" in flex_deployment["first"].stderr


def test_a_second_deploy_reuses_the_definition(flex_deployment):
    second = flex_deployment["second_calls"]
    assert [command_of(c) for c in second if command_of(c).startswith("role definition")] == ["role definition list"]
    listing = next(c for c in second if command_of(c) == "role definition list")["params"]
    assert (listing["name"], listing["scope"], listing["custom_role_only"]) == (ROLE_NAME, ACCOUNT_ID, True)
    assert f"Role definition {ROLE_NAME}: as it should be" in flex_deployment["second"].stderr
    assert f"Role {ROLE_NAME} for imgsync-test on stproductimgtest/product-images: assigned" \
        in flex_deployment["second"].stderr


def test_the_role_is_assigned_on_the_images_container_and_owner_nowhere_on_the_images(flex_deployment):
    state = flex_deployment["state"]
    assignment = next(r for r in app_roles(state) if r["role"] == ROLE_NAME)
    assert assignment["scope"] == CONTAINER_SCOPE
    assert assignment["roleDefinitionId"] == the_definition(state)["id"]
    # the assignment named the definition by its id, not by a name that a new definition lacks for a while
    create = next(c for c in flex_deployment["first_calls"] if command_of(c) == "role assignment create"
                  and c["params"]["scope"] == CONTAINER_SCOPE)
    assert create["params"]["role"] == the_definition(state)["id"]
    assert "Storage Blob Data Owner" not in {role for role, _ in images_roles(state)}
    assert "Storage Blob Data Owner" not in flex_deployment["first"].stderr.split("Host storage account")[0]


def test_a_definition_changed_by_hand_is_put_back(flex_deployment, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    definition = the_definition(state)
    definition["permissions"] = [{"actions": EXPECTED["actions"], "notActions": [], "notDataActions": [],
                                  "dataActions": [f"{BLOBS}/read", f"{BLOBS}/tags/read", f"{BLOBS}/delete"]}]
    fake.write_state(state)
    result = deploy(fake, env_file, project_dir)
    assert_ok(result)
    assert_all_parsed(fake)
    mutating = [command_of(c) for c in fake.calls() if is_mutating(c)]
    assert mutating == ["role definition update"], "only the definition changes; its assignment stays"
    assert f"Role definition {ROLE_NAME}: putting its rights back" in result.stderr
    assert f"+{BLOBS}/tags/write".lower() in result.stderr.lower() and f"-{BLOBS}/delete".lower() in result.stderr.lower()
    after = the_definition(fake.state())
    assert after["id"] == definition["id"] and permissions_of(after) == EXPECTED
    assert after["assignableScopes"] == [ACCOUNT_ID]


def test_assignment_waits_while_a_new_definition_replicates(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state({"role_definition_delay": 3})
    result = deploy(fake, env_file, project_dir)
    assert_ok(result)
    assert_all_parsed(fake)
    attempts = [c for c in fake.calls() if command_of(c) == "role assignment create"
                and c["params"]["scope"] == CONTAINER_SCOPE]
    assert [c["rc"] for c in attempts] == [1, 1, 1, 0]
    assert "a new custom role definition takes a few minutes to reach every region" in result.stderr
    assert (ROLE_NAME, CONTAINER_SCOPE) in images_roles(fake.state())


def test_the_wait_for_a_new_definition_is_bounded(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state({"role_definition_delay": 50})
    result = deploy(fake, env_file, project_dir)  # DEPLOY_RETRY_ATTEMPTS=5 in the tests
    assert result.returncode != 0
    assert f"gave up waiting for: role assignment '{ROLE_NAME}'" in result.stderr
    assert len([c for c in fake.calls() if command_of(c) == "role assignment create"
                and c["params"]["scope"] == CONTAINER_SCOPE]) == 5


def test_a_deployer_who_may_not_define_roles_stops_before_anything_is_created(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    fake.write_state({"permissions": {SUB: CONTRIBUTOR_AND_RBAC_ADMIN}})
    result = deploy(fake, env_file, project_dir)
    assert result.returncode != 0
    assert [c for c in fake.calls() if is_mutating(c)] == []
    assert_all_parsed(fake)
    missing = [line for line in result.stderr.split("nothing was changed:", 1)[1].splitlines()
               if line.startswith("  - ")]
    assert len(missing) == 1, result.stderr
    line = missing[0]
    assert line.startswith("  - Microsoft.Authorization/roleDefinitions/write on subscription")
    assert "IMAGES_DATA_ROLE=owner" in line and "Storage Blob Data Owner" in line and "broader" in line


def test_the_opt_in_grants_owner_and_says_it_is_broader(make_fake_az, env_file, project_dir):
    """The alternative for such a deployer: the same rights now suffice, and the app gets Owner on the
    images container - with a warning that says what that also allows."""
    fake = make_fake_az()
    fake.write_state({"permissions": {SUB: CONTRIBUTOR_AND_RBAC_ADMIN}})
    result = deploy(fake, env_file, project_dir, "--images-data-role", "owner")
    assert_ok(result)
    assert_all_parsed(fake)
    state = fake.state()
    assert ("Storage Blob Data Owner", CONTAINER_SCOPE) in images_roles(state)
    assert ROLE_NAME not in {role for role, _ in images_roles(state)}
    assert state["role_definitions"] == []
    assert not [c for c in fake.calls() if command_of(c).startswith("role definition")]
    assert "IMAGES_DATA_ROLE=owner" in result.stderr and "broader than it needs" in result.stderr
    assert "write, delete and change the access of every image" in result.stderr


def test_switching_between_the_custom_role_and_owner(flex_deployment, make_fake_az, env_file, project_dir):
    """Each switch adds the new role before it removes the old one, so the app never lacks access."""
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    result = deploy(fake, env_file, project_dir, extra_env={"IMAGES_DATA_ROLE": "owner"})
    assert_ok(result)
    # (and the Key Vault references are refreshed, as after any change of roles)
    changes = [command_of(c) for c in fake.calls() if is_mutating(c) and command_of(c) != "rest"]
    assert changes == ["role assignment create", "role assignment delete"]
    roles = images_roles(fake.state())
    assert ("Storage Blob Data Owner", CONTAINER_SCOPE) in roles and ROLE_NAME not in {r for r, _ in roles}
    assert f"Role {ROLE_NAME} for imgsync-test on stproductimgtest/product-images: no longer needed" in result.stderr

    fake.clear_log()
    result = deploy(fake, env_file, project_dir)
    assert_ok(result)
    assert_all_parsed(fake)
    changes = [command_of(c) for c in fake.calls() if is_mutating(c) and command_of(c) != "rest"]
    assert changes == ["role assignment create", "role assignment delete"], "the definition is still there"
    roles = images_roles(fake.state())
    assert (ROLE_NAME, CONTAINER_SCOPE) in roles and "Storage Blob Data Owner" not in {r for r, _ in roles}


def test_a_deployer_who_may_not_define_roles_can_redeploy_once_it_exists(flex_deployment, make_fake_az, env_file,
                                                                       project_dir):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    state = fake.state()
    state["permissions"] = {SUB: CONTRIBUTOR_AND_RBAC_ADMIN}
    fake.write_state(state)
    result = deploy(fake, env_file, project_dir)
    assert_ok(result)
    assert [c for c in fake.calls() if is_mutating(c)] == []


def test_a_bad_images_data_role_is_refused(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    result = deploy(fake, env_file, project_dir, "--images-data-role", "contributor")
    assert result.returncode != 0
    assert "IMAGES_DATA_ROLE 'contributor': custom (the default" in result.stderr
    assert fake.calls() == []


@pytest.mark.parametrize("role", ["custom", "owner"])
def test_dry_run_and_plan_name_the_images_role(role, flex_deployment, make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    dry = deploy(fake, env_file, project_dir, "--dry-run", "--images-data-role", role)
    assert_ok(dry)
    if role == "custom":
        assert "+ az role definition create --role-definition @" in dry.stdout
        assert "Microsoft.Authorization/roleDefinitions/write on subscription" in dry.stderr
    else:
        assert "role definition" not in dry.stdout and "roleDefinitions/write" not in dry.stderr
    fake.copy_state_from(flex_deployment["fake"])
    plan = deploy(fake, env_file, project_dir, "--plan", "--images-data-role", role)
    assert_ok(plan)
    assert [c for c in fake.calls() if is_mutating(c)] == []
    if role == "custom":
        assert f"unchanged  Role definition {ROLE_NAME}" in plan.stdout + plan.stderr
    else:
        text = plan.stdout + plan.stderr
        assert "create     Role Storage Blob Data Owner for imgsync-test on product-images" in text
        assert f"delete     Role {ROLE_NAME} for imgsync-test on stproductimgtest/product-images" in text


def test_teardown_deletes_the_role_once_nothing_holds_it(flex_deployment, make_fake_az, env_file):
    fake = make_fake_az()
    fake.copy_state_from(flex_deployment["fake"])
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--yes", secrets=False)
    assert_ok(down)
    assert not parse_failures(fake.calls())
    assert fake.state()["role_definitions"] == []
    assert f"Role definition {ROLE_NAME}: deleting" in down.stderr


def test_teardown_keeps_a_role_another_app_still_holds(make_fake_az, env_file, project_dir):
    """Two deployments on one (customer's) images account share the definition: teardown removes only its
    own app's assignments, Azure refuses to delete a role still assigned, and teardown says it left it."""
    customer_rg = "rg-customer"
    account_id = f"{SUB}/resourceGroups/{customer_rg}/providers/Microsoft.Storage/storageAccounts/stshared"
    container = f"{account_id}/blobServices/default/containers/product-images"
    fake = make_fake_az()
    fake.write_state({
        "groups": {customer_rg: {"id": f"{SUB}/resourceGroups/{customer_rg}", "name": customer_rg,
                                 "location": "westeurope", "tags": {}}},
        "accounts": {"stshared": {"name": "stshared", "resourceGroup": customer_rg, "location": "westeurope",
                                  "tags": {}}},
        "containers": {f"{account_id.lower()}/product-images": {"publicAccess": None}},
    })
    assert_ok(deploy(fake, env_file, project_dir, "--images-account", "stshared"))
    state = fake.state()
    (definition,) = state["role_definitions"]
    assert definition["assignableScopes"] == [account_id]
    state["roles"].append({"id": f"{container}/providers/Microsoft.Authorization/roleAssignments/other",
                           "principalId": "99999999-0000-0000-0000-000000000000", "principalType": "ServicePrincipal",
                           "role": definition["roleName"], "roleDefinitionName": definition["roleName"],
                           "scope": container, "roleDefinitionId": definition["id"]})
    fake.write_state(state)
    fake.clear_log()
    down = run_script("teardown.sh", fake, "--env-file", env_file, "--images-account", "stshared", "--yes",
                      secrets=False)
    assert_ok(down)
    assert not parse_failures(fake.calls())
    state = fake.state()
    assert [d["id"] for d in state["role_definitions"]] == [definition["id"]]
    assert [r["principalId"] for r in state["roles"] if r["scope"].startswith(account_id)] == [
        "99999999-0000-0000-0000-000000000000"], "only the other app's assignment is left"
    assert "custom role 'Image Sync Image Reader and Tagger (stshared)' (still assigned" in \
        down.stderr.split("Left in place:", 1)[1]
