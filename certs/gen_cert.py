"""gen-cert: make a site CA and one certificate per node role, or inspect certificates.

Layout written (the one users of the established system know)::

    ROOT/NAME/cert/ca/capath/ca-INDEX-cert.pem   site CA certificate (share this)
    ROOT/NAME/cert/ca/ca-INDEX-key.pem           site CA key (keep this)
    ROOT/NAME/cert/{sn,sl,swci}-INDEX-cert.pem   node certificates
    ROOT/NAME/cert/{sn,sl,swci}-INDEX-key.pem    node keys (mode 0600)

Exit codes: 0 ok, 1 refused to overwrite / could not write, 2 bad input.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import ipaddress
import re
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from cryptography import x509

from swarm.identity.certificates import (
    ROLES,
    IdentityError,
    cert_to_pem,
    create_ca,
    describe_certificate,
    is_ca_certificate,
    issue_node_certificate,
    key_matches_cert,
    load_pem_private_key,
    validate_site,
    write_pem_cert,
    write_pem_key,
)

PROG = "gen-cert"
_DNS_RE = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class UsageError(Exception):
    """Bad command-line input; reported as one line on stderr with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Make a site CA and node certificates for swarm, or inspect certificates.",
        epilog="Inspect instead: gen-cert --show FILE...  (or gen-cert inspect FILE...)",
    )
    p.add_argument("-e", "--name", dest="name", metavar="NAME", help="site name (e.g. hospital-a)")
    p.add_argument("-i", "--index", dest="index", metavar="INDEX", help="non-negative index")
    p.add_argument("--out", default="./workspace", metavar="ROOT",
                   help="output root (default ./workspace)")
    p.add_argument("--host-ip", action="extend", nargs="+", default=[], metavar="IP",
                   help="bind node certificates to these IPs (IP SANs)")
    p.add_argument("--dns", action="extend", nargs="+", default=[], metavar="NAME",
                   help="extra DNS SANs")
    p.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                   help="ec = P-256 (default), rsa = RSA 3072")
    p.add_argument("--days", default="365", metavar="N",
                   help="node certificate validity in days (default 365)")
    p.add_argument("--ca-cert", metavar="FILE", help="issue from this existing site CA certificate")
    p.add_argument("--ca-key", metavar="FILE", help="key of --ca-cert")
    p.add_argument("--roles", default=",".join(ROLES), metavar="LIST",
                   help="comma-separated roles to issue (default sn,sl,swci)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--show", nargs="+", metavar="FILE", help="print what a certificate says")
    return p


# --------------------------------------------------------------------------- validation


def _parse_index(raw: Optional[str]) -> int:
    if raw is None:
        raise UsageError("-i INDEX is required")
    if not raw.isascii() or not raw.isdigit():
        raise UsageError(f"index {raw!r} is not a non-negative integer")
    return int(raw)


def _parse_name(raw: Optional[str]) -> str:
    if raw is None:
        raise UsageError("-e NAME is required")
    try:
        return validate_site(raw)
    except IdentityError as exc:
        raise UsageError(str(exc)) from None


def _parse_ips(raw: Sequence[str]) -> list[str]:
    ips = []
    for item in (x for chunk in raw for x in chunk.split(",") if x):
        try:
            ips.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise UsageError(f"--host-ip {item!r} is not an IP address") from None
    return ips


def _parse_dns(raw: Sequence[str]) -> list[str]:
    names = [x for chunk in raw for x in chunk.split(",") if x]
    for name in names:
        if not _DNS_RE.match(name):
            raise UsageError(f"--dns {name!r} is not a valid DNS name")
    return names


def _parse_roles(raw: str) -> list[str]:
    roles = [r.strip() for r in raw.split(",") if r.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise UsageError(f"--roles {raw!r}: each role must be one of {', '.join(ROLES)}")
    return list(dict.fromkeys(roles))


def _parse_days(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        raise UsageError(f"--days {raw!r} is not a positive integer")
    return int(raw)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def _load_existing_ca(cert_file: str, key_file: str):
    try:
        ca_cert = x509.load_pem_x509_certificates(_read(cert_file, "--ca-cert"))[0]
    except (ValueError, IndexError):
        raise UsageError(f"--ca-cert {cert_file} is not a PEM certificate") from None
    if not is_ca_certificate(ca_cert):
        raise UsageError(f"--ca-cert {cert_file} is not a CA certificate")
    if _dt.datetime.now(_dt.timezone.utc) > ca_cert.not_valid_after_utc:
        raise UsageError(f"--ca-cert {cert_file} expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        ca_key = load_pem_private_key(_read(key_file, "--ca-key"))
    except IdentityError as exc:
        raise UsageError(f"--ca-key {key_file}: {exc}") from None
    if not key_matches_cert(ca_key, ca_cert):
        raise UsageError(f"--ca-key {key_file} does not match --ca-cert {cert_file}")
    return ca_key, ca_cert


# --------------------------------------------------------------------------- commands


def _generate(args: argparse.Namespace) -> int:
    name = _parse_name(args.name)
    index = _parse_index(args.index)
    ips = _parse_ips(args.host_ip)
    dns = _parse_dns(args.dns)
    roles = _parse_roles(args.roles)
    days = _parse_days(args.days)
    if bool(args.ca_cert) != bool(args.ca_key):
        raise UsageError("--ca-cert and --ca-key must be given together")
    existing = _load_existing_ca(args.ca_cert, args.ca_key) if args.ca_cert else None

    cert_dir = Path(args.out) / name / "cert"
    capath = cert_dir / "ca" / "capath"
    ca_cert_file = capath / f"ca-{index}-cert.pem"
    ca_key_file = cert_dir / "ca" / f"ca-{index}-key.pem"
    node_files = {
        r: (cert_dir / f"{r}-{index}-cert.pem", cert_dir / f"{r}-{index}-key.pem") for r in roles
    }

    targets = [ca_cert_file] + ([] if existing else [ca_key_file])
    targets += [f for pair in node_files.values() for f in pair]
    # Check everything before writing anything, so a refusal leaves no half-made site.
    if not args.force:
        for path in targets:
            if path == ca_cert_file and existing and path.is_file() \
                    and path.read_bytes() == cert_to_pem(existing[1]):
                continue  # the same CA copied again is no overwrite
            if path.exists():
                print(f"{PROG}: error: refusing to overwrite {path} (use --force)", file=sys.stderr)
                return 1

    if existing:
        ca_key, ca_cert = existing
    else:
        ca_key, ca_cert = create_ca(name, index, key_type=args.key_type)

    written: list[Path] = []
    try:
        capath.mkdir(parents=True, exist_ok=True)
        written.append(write_pem_cert(ca_cert_file, ca_cert))
        if not existing:
            written.append(write_pem_key(ca_key_file, ca_key))
        for role, (cert_file, key_file) in node_files.items():
            key, cert = issue_node_certificate(
                ca_key, ca_cert, role=role, index=index, site=name,
                host_ips=ips, dns_names=dns, key_type=args.key_type, days=days,
            )
            written.append(write_pem_cert(cert_file, cert))
            written.append(write_pem_key(key_file, key))
    except OSError as exc:
        print(f"{PROG}: error: cannot write {exc.filename or cert_dir}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1

    source = f"existing CA {args.ca_cert}" if existing else "new site CA"
    print(f"site {name}, index {index}: {args.key_type} keys, "
          f"{days}-day node certificates, {source}")
    for path in written:
        print(f"  {path}")
    print(f"To trust other sites, copy their ca-*-cert.pem into {capath}/")
    return 0


def _fmt(ts: _dt.datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _show(files: Sequence[str]) -> int:
    rc = 0
    for f in files:
        try:
            info = describe_certificate(_read(f, "certificate"))
        except UsageError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            rc = 2
            continue
        except IdentityError:
            print(f"{PROG}: error: {f} is not a PEM certificate", file=sys.stderr)
            rc = 2
            continue
        if info["node_id"]:
            head = (f"{info['node_id']}  role={info['role']} "
                    f"index={info['index']} site={info['site']}")
        elif info["is_ca"]:
            head = f"CA certificate {info['subject']}"
        else:
            head = f"{info['subject']} (no swarm identity: {info['identity_error']})"
        sans = [f"DNS:{d}" for d in info["dns_sans"]] + [f"IP:{i}" for i in info["ip_sans"]]
        state = " EXPIRED" if info["expired"] else ""
        state = " NOT YET VALID" if info["not_yet_valid"] else state
        print(f"{f}: {head}")
        if sans:
            print(f"  SANs:        {', '.join(sans)}")
        print(f"  fingerprint: {info['fingerprint']}")
        print(f"  valid:       {_fmt(info['not_before'])} .. {_fmt(info['not_after'])}{state}")
        print(f"  issuer:      {info['issuer']}")
    return rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["inspect"]:
        if len(argv) < 2:
            print(f"{PROG}: error: inspect needs at least one FILE", file=sys.stderr)
            return 2
        return _show(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0)
    try:
        if args.show:
            return _show(args.show)
        return _generate(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
