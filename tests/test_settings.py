"""Every setting: defaults, and the message a user sees when it is missing or wrong."""
import pytest

from shared.errors import ConfigError
from shared.settings import DEFAULT_PATH_PATTERN, Settings

BASE = {"IMAGES_STORAGE": "UseDevelopmentStorage=true"}
WALLIE = {"WALLIE_BASE_URL": "https://wallie.example", "WALLIE_TENANT": "T", "WALLIE_USERNAME": "u",
          "WALLIE_PASSWORD": "p"}
TRAEDE = {"TRAEDE_BASE_URL": "https://traede.example", "TRAEDE_ACCESS_TOKEN": "tok", "TRAEDE_APP_KEY": "key"}


def test_defaults():
    s = Settings.from_env(BASE)
    assert s.storage.connection_string == "UseDevelopmentStorage=true"
    assert s.storage.container == "product-images"
    assert s.path_pattern == DEFAULT_PATH_PATTERN
    assert (s.sas_ttl_hours, s.sas_start_skew_minutes) == (48, 15)
    assert s.wallie is None and s.traede is None
    assert s.sync_concurrency == 4 and s.log_level == "INFO"


def test_identity_based_connection_by_uri_and_by_account_name():
    s = Settings.from_env({"IMAGES_STORAGE__blobServiceUri": "https://acct.blob.core.windows.net/"})
    assert s.storage.uses_identity and s.storage.account_url == "https://acct.blob.core.windows.net"
    s = Settings.from_env({"IMAGES_STORAGE__accountName": "acct"})
    assert s.storage.account_url == "https://acct.blob.core.windows.net"
    assert s.storage.queue_url == "https://acct.queue.core.windows.net"


def test_partners_are_read_when_their_base_url_is_set():
    s = Settings.from_env({**BASE, **WALLIE, **TRAEDE, "WALLIE_BATCH_SIZE": "250",
                           "TRAEDE_PAYLOAD_KEY": "product_images"})
    assert s.wallie.tenant == "T" and s.wallie.batch_size == 250
    assert s.traede.payload_key == "product_images" and s.traede.color_attribute == "Color"
    assert "p" not in repr(s.wallie).split("password")[-1][:5]  # secrets are kept out of repr


@pytest.mark.parametrize("env, setting, expected", [
    ({}, "IMAGES_STORAGE", "connection string"),
    ({"IMAGES_STORAGE": "nonsense"}, "IMAGES_STORAGE", "not a storage connection string"),
    ({"IMAGES_STORAGE__blobServiceUri": "acct.blob"}, "IMAGES_STORAGE__blobServiceUri", "not a URL"),
    ({**BASE, "IMAGES_CONTAINER": "Bad_Name"}, "IMAGES_CONTAINER", "3-63 lowercase"),
    ({**BASE, "SAS_TTL_HOURS": "200"}, "SAS_TTL_HOURS", "at most 168"),
    ({**BASE, "SAS_TTL_HOURS": "soon"}, "SAS_TTL_HOURS", "expected a number"),
    ({**BASE, "SAS_START_SKEW_MINUTES": "-5"}, "SAS_START_SKEW_MINUTES", "from 0 to 60"),
    ({**BASE, "WALLIE_BASE_URL": "https://w"}, "WALLIE_TENANT", "required because WALLIE_BASE_URL"),
    ({**BASE, **WALLIE, "WALLIE_PASSWORD": ""}, "WALLIE_PASSWORD", "is not set"),
    ({**BASE, **WALLIE, "WALLIE_BATCH_SIZE": "5000"}, "WALLIE_BATCH_SIZE", "from 1 to 1000"),
    ({**BASE, "WALLIE_BASE_URL": "ftp://x"}, "WALLIE_BASE_URL", "not a URL"),
    ({**BASE, "TRAEDE_BASE_URL": "https://t"}, "TRAEDE_ACCESS_TOKEN", "TRAEDE API user"),
    ({**BASE, **TRAEDE, "TRAEDE_APP_KEY": " "}, "TRAEDE_APP_KEY", "app key"),
    ({**BASE, "SYNC_CONCURRENCY": "0"}, "SYNC_CONCURRENCY", "from 1 to 64"),
    ({**BASE, "HTTP_TIMEOUT_SECONDS": "x"}, "HTTP_TIMEOUT_SECONDS", "expected a number"),
    ({**BASE, "HTTP_MAX_RETRIES": "-1"}, "HTTP_MAX_RETRIES", "whole number"),
    ({**BASE, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "DEBUG, INFO"),
])
def test_bad_settings_name_the_setting_and_what_is_expected(env, setting, expected):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    assert setting in str(exc.value) and expected in str(exc.value)


def test_unresolved_key_vault_reference_is_reported_as_such():
    env = {**BASE, **WALLIE,
           "WALLIE_PASSWORD": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/WALLIE-PASSWORD/)"}
    with pytest.raises(ConfigError) as exc:
        Settings.from_env(env)
    message = str(exc.value)
    assert "WALLIE_PASSWORD is an unresolved Key Vault reference" in message
    assert "Key Vault Secrets User" in message
    assert "kv.vault.azure.net" not in message  # the message explains, it does not echo the reference
