"""A throw-away certificate authority and a server certificate for 127.0.0.1, made with the
``openssl`` command (the ``cryptography`` package is not a dependency of the project)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CERT_DAYS = "2"
# P-256 keys: generated in milliseconds, where RSA would take most of a second.
KEY_OPTIONS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
# What a strict verifier (Python 3.13's VERIFY_X509_STRICT) expects of a server certificate.
SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA that signed the server's certificate, and the server's key pair."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path
    """A CA that signed nothing here: a client trusting only it must refuse the server."""

    def server_args(self) -> list[str]:
        """redis-server arguments for TLS without client certificates."""
        return [
            "--tls-cert-file", str(self.server_cert),
            "--tls-key-file", str(self.server_key),
            "--tls-ca-cert-file", str(self.ca_cert),
            "--tls-auth-clients", "no",
        ]  # fmt: skip


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=30)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *KEY_OPTIONS, "-keyout", str(key), "-out", str(cert),
        "-days", CERT_DAYS, "-subj", f"/CN=cps-limiter test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return cert, key


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca(directory, "ca")
    other_ca_cert, _ = _make_ca(directory, "other-ca")
    server_key, server_csr = directory / "server.key", directory / "server.csr"
    server_cert, extensions = directory / "server.crt", directory / "server.ext"
    extensions.write_text(SERVER_EXTENSIONS)
    _openssl(
        "req", "-new", *KEY_OPTIONS, "-keyout", str(server_key), "-out", str(server_csr),
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(server_csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(server_cert), "-days", CERT_DAYS,
        "-extfile", str(extensions),
    )  # fmt: skip
    # redis-server runs as this user and must read its key; nobody else needs to.
    server_key.chmod(0o600)
    return TlsFiles(ca_cert, server_cert, server_key, other_ca_cert)
