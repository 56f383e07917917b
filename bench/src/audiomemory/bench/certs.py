"""Certificates for the tests and the reliability scripts, made with ``openssl``: a CA, a server/client
certificate for 127.0.0.1 and localhost signed by it, and a second CA with a client certificate
of its own (an outsider)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path  # SANs 127.0.0.1 and localhost, usable as server and client certificate
    key: Path
    other_ca: Path
    other_cert: Path  # signed by other_ca
    other_key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)


def _leaf(folder: Path, name: str, ca: str) -> None:
    (folder / f"{name}.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", cwd=folder)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _leaf(folder, "node", "ca")
    _ca(folder, "other-ca")
    _leaf(folder, "outsider", "other-ca")
    return Certs(folder / "ca.pem", folder / "node.pem", folder / "node.key", folder / "other-ca.pem",
                 folder / "outsider.pem", folder / "outsider.key")
