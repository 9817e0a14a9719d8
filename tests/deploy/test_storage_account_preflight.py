"""A reused storage account of the wrong kind stops the deploy in the preflight, before anything is
created, naming what is wrong and what to use instead. The fake Azure gives each kind only the services
Azure does (so the deploy would really fail halfway without the check)."""

import pytest
from deploy_harness import assert_ok, command_of, is_mutating, leaks, parse_failures, run_script

SUB = "00000000-0000-0000-0000-000000000001"
CUSTOMER_RG = "rg-customer"
ACCOUNT = "custimages"
ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"


def seed(fake, **account):
    fake.write_state({
        "groups": {CUSTOMER_RG: {"id": f"/subscriptions/{SUB}/resourceGroups/{CUSTOMER_RG}", "name": CUSTOMER_RG,
                                 "location": "westeurope", "tags": {}}},
        "accounts": {ACCOUNT: {"name": ACCOUNT, "resourceGroup": CUSTOMER_RG, "location": "westeurope", "tags": {},
                               **account}},
        "containers": {f"{ACCOUNT_ID.lower()}/product-images": {"publicAccess": None}},
    })


def deploy(fake, env_file, project_dir, *args, **extra_env):
    return run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                      "--images-account", ACCOUNT, *args, extra_env=extra_env)


@pytest.mark.parametrize("kind, sku, says", [
    ("Storage", "Standard_LRS", ["general-purpose v1 (kind Storage)", "Event Grid takes no blob events",
                                 "--set kind=StorageV2"]),
    ("BlobStorage", "Standard_LRS", ["legacy Blob storage account (kind BlobStorage)", "no queue service",
                                     "--set kind=StorageV2"]),
    ("BlockBlobStorage", "Premium_LRS", ["premium block blob account (kind BlockBlobStorage)", "no queue service",
                                         "cannot be converted", "azcopy"]),
    ("FileStorage", "Premium_LRS", ["kind FileStorage", "no blob service"]),
    ("StorageV2", "Premium_LRS", ["premium general-purpose v2 account (Premium_LRS)", "page blobs only",
                                  "Standard_LRS"]),
], ids=["gpv1", "blobstorage", "blockblobstorage", "filestorage", "premium-v2"])
def test_each_wrong_kind_stops_in_preflight_with_nothing_created(kind, sku, says, make_fake_az, env_file,
                                                                   project_dir):
    fake = make_fake_az()
    seed(fake, kind=kind, sku=sku)
    result = deploy(fake, env_file, project_dir)
    assert result.returncode != 0
    for text in says:
        assert text in result.stderr, text
    assert f"storage account {ACCOUNT}" in result.stderr and "IMAGES_STORAGE_ACCOUNT" in result.stderr
    assert "stopped before creating anything" in result.stderr
    calls = fake.calls()
    assert [c for c in calls if is_mutating(c)] == [], "nothing created: not even the resource group"
    assert not parse_failures(calls)
    assert "rest" not in [command_of(c) for c in calls], "it stops before asking for rights"


def test_the_fake_refuses_what_azure_refuses_for_those_kinds(make_fake_az):
    """Without the preflight the deploy would get this far and fail, after the vault and monitoring."""
    import subprocess

    fake = make_fake_az()
    seed(fake, kind="BlobStorage")
    queue = subprocess.run(["az", "resource", "create", "--id", f"{ACCOUNT_ID}/queueServices/default/queues/q",
                            "--api-version", "2023-05-01", "--properties", "{}"],
                           capture_output=True, text=True, env=fake.env())
    assert queue.returncode != 0 and "Queue is not supported" in queue.stderr
    seed(fake, kind="Storage")
    topic = subprocess.run(["az", "eventgrid", "system-topic", "create", "-n", "t", "-g", CUSTOMER_RG, "-l",
                            "westeurope", "--topic-type", "Microsoft.Storage.StorageAccounts", "--source", ACCOUNT_ID],
                           capture_output=True, text=True, env=fake.env())
    assert topic.returncode != 0 and "do not support Event Grid" in topic.stderr


def test_a_hierarchical_namespace_is_used_without_copy_blob_in_the_filter(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    seed(fake, kind="StorageV2", sku="Standard_RAGRS", isHnsEnabled=True)
    result = deploy(fake, env_file, project_dir)
    assert_ok(result)
    assert "hierarchical namespace" in result.stderr and "leaves CopyBlob out" in result.stderr
    calls = fake.calls()
    assert not parse_failures(calls) and not leaks(calls)
    created = next(s for s in fake.state()["event_subscriptions"].values() if s["name"].endswith("-blob-created"))
    assert created["filter"]["advancedFilters"] == [{
        "key": "data.api", "operatorType": "StringIn",
        "values": ["PutBlob", "PutBlockList", "FlushWithClose", "SftpCommit"]}]


def test_the_polling_trigger_is_refused_on_a_hierarchical_namespace(make_fake_az, env_file, project_dir):
    fake = make_fake_az()
    seed(fake, isHnsEnabled=True)
    result = deploy(fake, env_file, project_dir, "--hosting-plan", "premium",
                    BLOB_TRIGGER_SOURCE="LogsAndContainerScan")
    assert result.returncode != 0
    assert "polling blob trigger does not support" in result.stderr and "leave BLOB_TRIGGER_SOURCE at EventGrid" \
        in result.stderr
    assert [c for c in fake.calls() if is_mutating(c)] == []


@pytest.mark.parametrize("plan, host, ok", [
    ("flex", {"kind": "BlobStorage"}, False),
    ("premium", {"allowSharedKeyAccess": False}, False),
    ("consumption", {"allowSharedKeyAccess": False}, False),
    ("flex", {"allowSharedKeyAccess": False}, True),
], ids=["blob-only-host", "premium-without-shared-keys", "consumption-without-shared-keys", "flex-keyless"])
def test_an_existing_host_account_is_checked_too(plan, host, ok, make_fake_az, env_file, project_dir):
    """The host account the deploy would reuse (it exists in the resource group under the derived name):
    blobs, queues and tables; and shared keys where the plan cannot do without them."""
    fake = make_fake_az()
    rg = "rg-imgsync-test"
    probe = run_script("deploy.sh", fake, "--env-file", env_file, "--dry-run", secrets=False)
    host_name = next(word for line in probe.stdout.splitlines() if "storage account create" in line
                     for word in line.split() if word.startswith("stimgsync"))
    fake.write_state({
        "groups": {rg: {"id": f"/subscriptions/{SUB}/resourceGroups/{rg}", "name": rg, "location": "westeurope",
                        "tags": {}}},
        "accounts": {host_name: {"name": host_name, "resourceGroup": rg, "location": "westeurope", "tags": {}, **host}},
    })
    result = run_script("deploy.sh", fake, "--env-file", env_file, "--project-dir", project_dir,
                        "--hosting-plan", plan)
    if ok:
        assert_ok(result)
        settings = fake.state()["apps"]["imgsync-test"]["settings"]
        assert settings["AzureWebJobsStorage__accountName"] == host_name and "AzureWebJobsStorage" not in settings
        assert fake.state()["accounts"][host_name]["allowSharedKeyAccess"] is False, "left as the operator had it"
        return
    assert result.returncode != 0 and f"storage account {host_name}" in result.stderr
    assert "HOST_STORAGE_ACCOUNT" in result.stderr or "--hosting-plan flex" in result.stderr
    assert [c for c in fake.calls() if is_mutating(c)] == []
