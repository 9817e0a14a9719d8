"""Identity-based connection: user-delegation SAS against Azurite with OAuth over HTTPS.

Azurite's basic OAuth mode checks a bearer token's issuer, audience and lifetime (not its signature), which
is what a managed identity presents in Azure; the credential below is the edge we fake, nothing of ours.
"""
import base64
import datetime as dt
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken

from devtools.azurite import Azurite
from devtools.images import jpeg
from shared.config.settings import Settings
from shared.storage.clients import blob_service
from shared.storage.sas import SasSigner


class LocalIdentityCredential:
    """A token shaped like Entra ID's, as Azurite's basic OAuth mode expects."""

    def get_token(self, *scopes, **kwargs):
        now = int(time.time())
        claims = {"aud": "https://storage.azure.com", "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/",
                  "nbf": now - 60, "iat": now - 60, "exp": now + 3600, "oid": "11111111-1111-1111-1111-111111111111",
                  "tid": "00000000-0000-0000-0000-000000000001"}
        def enc(d):
            return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

        token = f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims)}.{enc({'sig': 'local'})}"
        return AccessToken(token, now + 3600)

    def get_token_info(self, *scopes, **kwargs):  # newer azure-core asks for this first
        from azure.core.credentials import AccessTokenInfo

        token = self.get_token(*scopes)
        return AccessTokenInfo(token.token, token.expires_on)


def self_signed_cert(folder):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def oauth_azurite(tmp_path_factory):
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    with Azurite(scheme="https", extra_args=("--oauth", "basic", "--cert", str(cert), "--key", str(key))) as az:
        yield az, str(cert)


def test_identity_connection_signs_with_one_delegation_key_and_urls_download(oauth_azurite):
    azurite, cert = oauth_azurite
    seen = []
    settings = Settings.from_env({"IMAGES_STORAGE__blobServiceUri": azurite.blob_endpoint})
    assert settings.storage.uses_identity
    service = blob_service(settings.storage, LocalIdentityCredential(), connection_verify=cert,
                           raw_request_hook=lambda request: seen.append(request.http_request.url))
    container = service.create_container("product-images")
    data = {f"100/10/{n}.jpg": jpeg(note=n) for n in ("front", "back", "side view #2")}
    for name, body in data.items():
        container.upload_blob(name, body)
    signer = SasSigner(service, "product-images", ttl=dt.timedelta(hours=48), start_skew=dt.timedelta(minutes=15))
    assert signer.uses_delegation_key
    urls = {name: signer.url(name) for name in data}
    key_requests = [u for u in seen if "comp=userdelegationkey" in u]
    assert len(key_requests) == 1  # fetched once, reused for every URL of the run
    for name, url in urls.items():
        q = parse_qs(urlsplit(url).query)
        assert q["sp"] == ["r"] and q["sr"] == ["b"] and q["spr"] == ["https"] and "skoid" in q
        response = requests.get(url, verify=cert, timeout=10)  # anonymous: only the SAS authorises it
        assert response.status_code == 200 and response.content == data[name]
    tampered = urls["100/10/front.jpg"].replace("sp=r", "sp=rw")
    assert requests.get(tampered, verify=cert, timeout=10).status_code == 403
    assert requests.put(urls["100/10/front.jpg"], data=b"x", headers={"x-ms-blob-type": "BlockBlob"},
                        verify=cert, timeout=10).status_code == 403
