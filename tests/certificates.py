"""Certificates made at test time by the openssl command, for the front door's TLS tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def make_certificates(folder: Path) -> None:
    """A CA and a certificate for 127.0.0.1 it signs (ca.crt, tls.crt, tls.key), and another CA
    (other-ca.crt) that signed nothing here."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", *EC, "-days", "1", "-subj", "/CN=kor-ner test CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-x509", *EC, "-days", "1", "-subj", "/CN=another CA", "-keyout", "other-ca.key", "-out", "other-ca.crt")
    run("req", *EC, "-subj", "/CN=127.0.0.1", "-keyout", "tls.key", "-out", "tls.csr")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "san.cnf", "-out", "tls.crt")  # fmt: skip
