"""An operator's CA bundle adds to the system's CAs (SSL_CERT_FILE would replace them), and
a client certificate is shown to endpoints that ask for one (mutual TLS)."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from parcelhook.config import Settings
from parcelhook.delivery.sender import Sender
from parcelhook.runtime import tls_context
from support.tls_endpoint import issue, mutual_tls_endpoint


async def _send(url: str, settings: Settings) -> tuple[int | None, str | None]:
    async with Sender(timeout=3.0, allow_private=True, ssl_context=tls_context(settings)) as sender:
        r = await sender.send(url, b"{}", {})
    return r.status_code, r.error


async def test_the_operators_ca_and_client_certificate_reach_a_mutual_tls_endpoint(
    tmp_path: Path,
) -> None:
    async with mutual_tls_endpoint(tmp_path) as (url, bundle, client):
        assert await _send(url, Settings(ca_bundle=bundle, client_cert=client)) == (200, None)
        # without the client certificate the endpoint refuses the handshake
        status, error = await _send(url, Settings(ca_bundle=bundle))
        assert status is None and error is not None
        # without the CA the endpoint's certificate is not trusted
        status, error = await _send(url, Settings(client_cert=client))
        assert status is None and "certificate" in (error or "")


def test_the_bundle_adds_to_the_system_cas(tmp_path: Path) -> None:
    ca = issue("parcelhook test CA", None, ca=True)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    context = tls_context(Settings(ca_bundle=bundle))
    assert context is not None
    assert context.cert_store_stats()["x509_ca"] == system + 1
    assert tls_context(Settings()) is None  # the sender's default: the system's CAs
