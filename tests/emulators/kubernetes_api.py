"""A stand-in for the one Kubernetes API call Vault's ``kubernetes`` auth method makes:
``POST /apis/authentication.k8s.io/v1/tokenreviews``.

Vault sends the pod's service-account JWT for review; the real API server says whether it is
valid and whose it is. Here a test registers which tokens are valid and for which service
account; any other token is reviewed as not authenticated. Every review is recorded.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def self_signed_ca_pem() -> str:
    """A CA certificate for Vault's ``kubernetes_ca_cert`` (required; unused over http)."""
    import datetime

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-cluster-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class TokenReviewAPI:
    """Answers token reviews on a loopback port (``url``) until ``stop()``."""

    valid: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    reviews: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.reviews.append(
                    {
                        "path": self.path,
                        "body": body,
                        "authorization": self.headers.get("Authorization"),
                    }
                )
                status: dict[str, Any] = {"authenticated": False, "user": {}}
                who = api.valid.get(body.get("spec", {}).get("token", ""))
                if self.path == REVIEW_PATH and who is not None:
                    namespace, name, uid = who
                    status = {
                        "authenticated": True,
                        "user": {
                            "username": f"system:serviceaccount:{namespace}:{name}",
                            "uid": uid,
                            "groups": ["system:serviceaccounts"],
                        },
                        "audiences": body["spec"].get("audiences") or [],
                    }
                data = json.dumps(
                    {
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenReview",
                        "status": status,
                    }
                ).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def allow(self, token: str, namespace: str, name: str, uid: str) -> None:
        """Review ``token`` as valid for service account ``namespace/name``."""
        self.valid[token] = (namespace, name, uid)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
