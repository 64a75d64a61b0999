"""gen-cert and the certificate API: layout, identity extension, SANs, validity, errors."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.gen_cert import main
from swarm.identity import (
    IDENTITY_OID,
    IdentityError,
    create_ca,
    fingerprint_of,
    identity_from_pem,
    issue_node_certificate,
    write_pem_cert,
    write_pem_key,
)
from swarm.identity.certificates import (
    _der_utf8string,
    _parse_der_utf8string,
    decode_identity_value,
)

REPO = Path(__file__).resolve().parents[2]
ROLES = ("sn", "sl", "swci")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _layout(site: str, index: int, roles=ROLES, with_ca_key: bool = True) -> set[str]:
    files = {f"{site}/cert/ca/capath/ca-{index}-cert.pem"}
    if with_ca_key:
        files.add(f"{site}/cert/ca/ca-{index}-key.pem")
    for r in roles:
        files |= {f"{site}/cert/{r}-{index}-cert.pem", f"{site}/cert/{r}-{index}-key.pem"}
    return files


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_key(path: Path):
    return load_pem_private_key(path.read_bytes(), password=None)


def test_layout_identity_sans_and_validity(tmp_path, capsys):
    rc = main(["-e", "siteA", "-i", "1", "--out", str(tmp_path),
               "--host-ip", "10.0.0.5", "--dns", "a.example.org"])
    out = capsys.readouterr().out
    assert rc == 0
    assert _files(tmp_path) == _layout("siteA", 1)
    assert "copy their ca-*-cert.pem into" in out and "capath" in out

    cert_dir = tmp_path / "siteA" / "cert"
    ca = _cert(cert_dir / "ca" / "capath" / "ca-1-cert.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    assert 3649 <= ca_days <= 3651
    for key_file in [cert_dir / "ca" / "ca-1-key.pem"] + [cert_dir / f"{r}-1-key.pem" for r in ROLES]:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file

    now = dt.datetime.now(dt.timezone.utc)
    for role in ROLES:
        pem = (cert_dir / f"{role}-1-cert.pem").read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        ident = identity_from_pem(pem)
        assert (ident.role, ident.index, ident.site) == (role, 1, "siteA")
        assert ident.node_id == f"siteA/{role}-1"
        assert ident.fingerprint == fingerprint_of(pem) and len(ident.fingerprint) == 64
        assert ident.short_fingerprint == ident.fingerprint[:16]
        raw = cert.extensions.get_extension_for_oid(IDENTITY_OID)
        assert not raw.critical
        assert raw.value.value == _der_utf8string(f"role={role};index=1;site=siteA")
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{role}-1"
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "siteA"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [f"swarm-{role}", "a.example.org"]
        assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign
        cert.verify_directly_issued_by(ca)
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        assert 364.9 < days <= 365.01
        assert cert.not_valid_before_utc <= now
        key = _load_key(cert_dir / f"{role}-1-key.pem")
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_rsa_on_request_and_role_subset(tmp_path):
    assert main(["-e", "siteR", "-i", "0", "--out", str(tmp_path),
                 "--key-type", "rsa", "--roles", "sl", "--days", "30"]) == 0
    assert _files(tmp_path) == _layout("siteR", 0, roles=("sl",))
    cert_dir = tmp_path / "siteR" / "cert"
    key = _load_key(cert_dir / "sl-0-key.pem")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    cert = _cert(cert_dir / "sl-0-cert.pem")
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert identity_from_pem(cert.public_bytes(Encoding.PEM)).index == 0


def test_reuse_existing_site_ca(tmp_path):
    assert main(["-e", "siteA", "-i", "1", "--out", str(tmp_path)]) == 0
    ca_dir = tmp_path / "siteA" / "cert" / "ca"
    ca_cert_file, ca_key_file = ca_dir / "capath" / "ca-1-cert.pem", ca_dir / "ca-1-key.pem"
    assert main(["-e", "siteA", "-i", "2", "--out", str(tmp_path), "--roles", "sl",
                 "--ca-cert", str(ca_cert_file), "--ca-key", str(ca_key_file)]) == 0
    assert _files(tmp_path) == _layout("siteA", 1) | _layout("siteA", 2, ("sl",), with_ca_key=False)
    assert (ca_dir / "capath" / "ca-2-cert.pem").read_bytes() == ca_cert_file.read_bytes()
    _cert(tmp_path / "siteA" / "cert" / "sl-2-cert.pem").verify_directly_issued_by(_cert(ca_cert_file))


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    args = ["-e", "siteA", "-i", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    sl_cert = tmp_path / "siteA" / "cert" / "sl-1-cert.pem"
    before = sl_cert.read_bytes()
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "ca-1-cert.pem" in err and "--force" in err
    assert sl_cert.read_bytes() == before
    assert main(args + ["--force"]) == 0
    assert sl_cert.read_bytes() != before
    assert stat.S_IMODE((tmp_path / "siteA" / "cert" / "sl-1-key.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-e", "siteA", "-i", "x"], "index 'x' is not a non-negative integer"),
        (["-e", "siteA", "-i", "-1"], "index '-1' is not a non-negative integer"),
        (["-e", "site/A", "-i", "1"], "must not contain '/' or spaces"),
        (["-e", "site A", "-i", "1"], "must not contain '/' or spaces"),
        (["-i", "1"], "-e NAME is required"),
        (["-e", "siteA", "-i", "1", "--host-ip", "10.0.0.300"], "--host-ip '10.0.0.300' is not an IP address"),
        (["-e", "siteA", "-i", "1", "--dns", "bad name"], "--dns 'bad name' is not a valid DNS name"),
        (["-e", "siteA", "-i", "1", "--roles", "sl,boss"], "each role must be one of sn, sl, swci"),
        (["-e", "siteA", "-i", "1", "--days", "0"], "--days '0' is not a positive integer"),
        (["-e", "siteA", "-i", "1", "--ca-cert", "NOFILE", "--ca-key", "NOFILE"],
         "cannot read --ca-cert NOFILE: No such file or directory"),
        (["-e", "siteA", "-i", "1", "--ca-cert", "NOFILE"], "--ca-cert and --ca-key must be given together"),
        (["-e", "siteA", "-i", "1", "--ca-cert", "NOTPEM", "--ca-key", "NOTPEM"], "is not a PEM certificate"),
        (["-e", "siteA", "-i", "1", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_one_line_error_exit_2(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "NOTPEM").write_text("hello\n")
    out = tmp_path / "out"
    assert main(extra + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("gen-cert: error: ")
    assert not out.exists()


def test_ca_key_must_match_ca_cert(tmp_path, capsys):
    assert main(["-e", "siteA", "-i", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["-e", "siteB", "-i", "1", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    rc = main(["-e", "siteA", "-i", "2", "--out", str(tmp_path / "c"),
               "--ca-cert", str(tmp_path / "a/siteA/cert/ca/capath/ca-1-cert.pem"),
               "--ca-key", str(tmp_path / "b/siteB/cert/ca/ca-1-key.pem")])
    assert rc == 2
    assert "does not match --ca-cert" in capsys.readouterr().err
    # A node certificate is no CA.
    rc = main(["-e", "siteA", "-i", "2", "--out", str(tmp_path / "c"),
               "--ca-cert", str(tmp_path / "a/siteA/cert/sl-1-cert.pem"),
               "--ca-key", str(tmp_path / "a/siteA/cert/sl-1-key.pem")])
    assert rc == 2
    assert "is not a CA certificate" in capsys.readouterr().err


def test_show_and_inspect(tmp_path, capsys):
    assert main(["-e", "siteA", "-i", "3", "--out", str(tmp_path), "--host-ip", "192.0.2.7"]) == 0
    cert_dir = tmp_path / "siteA" / "cert"
    ca_key = _load_key(cert_dir / "ca" / "ca-3-key.pem")
    ca_cert = _cert(cert_dir / "ca" / "capath" / "ca-3-cert.pem")
    now = dt.datetime.now(dt.timezone.utc)
    _, old = issue_node_certificate(ca_key, ca_cert, role="sn", index=9, site="siteA",
                                    not_before=now - dt.timedelta(days=10),
                                    not_after=now - dt.timedelta(days=1))
    old_file = write_pem_cert(tmp_path / "old.pem", old)
    sl = cert_dir / "sl-3-cert.pem"
    capsys.readouterr()

    assert main(["--show", str(sl), str(old_file)]) == 0
    out = capsys.readouterr().out
    first, second = out.split(str(old_file))
    assert "siteA/sl-3" in first and "role=sl index=3 site=siteA" in first
    assert "DNS:swarm-sl" in first and "IP:192.0.2.7" in first
    assert fingerprint_of(sl.read_bytes()) in first
    assert "EXPIRED" not in first
    assert "siteA/sn-9" in second and "EXPIRED" in second

    assert main(["inspect", str(sl)]) == 0
    assert "siteA/sl-3" in capsys.readouterr().out

    assert main(["--show", str(cert_dir / "sl-3-key.pem")]) == 2
    assert "is not a PEM certificate" in capsys.readouterr().err


def test_real_subprocess(tmp_path):
    exe = REPO / ".venv" / "bin" / "gen-cert"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "certs.gen_cert"]
    ok = subprocess.run(cmd + ["-e", "siteS", "-i", "4"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert _files(tmp_path / "workspace") == _layout("siteS", 4)  # default --out ./workspace
    assert "siteS/cert/ca/capath" in ok.stdout
    bad = subprocess.run(cmd + ["-e", "siteS", "-i", "four"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr == "gen-cert: error: index 'four' is not a non-negative integer\n"


def test_write_pem_key_created_0600_even_with_open_umask(tmp_path):
    key, _ = create_ca("siteK", 1)
    old = os.umask(0)
    try:
        path = write_pem_key(tmp_path / "k.pem", key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()


def test_der_utf8string_round_trip_and_rejects_malformed():
    for text in ["", "a", "x" * 127, "y" * 128, "z" * 300, "é" * 70000]:
        der = _der_utf8string(text)
        assert _parse_der_utf8string(der) == text
    assert _der_utf8string("x" * 127)[:2] == b"\x0c\x7f"
    assert _der_utf8string("x" * 128)[:3] == b"\x0c\x81\x80"
    assert _der_utf8string("x" * 300)[:4] == b"\x0c\x82\x01\x2c"
    good = _der_utf8string("role=sl;index=1;site=s")
    for bad in [b"", b"\x0c", b"\x04\x01a", good[:-1], good + b"\x00",
                b"\x0c\x80", b"\x0c\x81\x05hello", b"\x0c\x82\x00\x05hello", b"\x0c\x02\xff\xfe"]:
        with pytest.raises(IdentityError):
            _parse_der_utf8string(bad)
    assert decode_identity_value(good) == ("sl", 1, "s")
    for text in ["role=boss;index=1;site=s", "role=sl;index=-1;site=s", "role=sl;index=1",
                 "role=sl;index=1;site=s;extra=1", "role=sl;index=1;site=a/b", "role=sl;role=sn;site=s"]:
        with pytest.raises(IdentityError):
            decode_identity_value(_der_utf8string(text))


def test_certificate_without_extension_is_a_clear_error():
    _, ca = create_ca("siteN", 1)
    pem = ca.public_bytes(Encoding.PEM)
    with pytest.raises(IdentityError, match=r"CN=siteN swarm CA 1 has no swarm identity extension; "
                                            r"make it with gen-cert"):
        identity_from_pem(pem)
    with pytest.raises(IdentityError, match="not a PEM certificate"):
        identity_from_pem(b"garbage")
