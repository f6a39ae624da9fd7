"""Offline exchange: STIX bundle files with detached Ed25519 signatures.

Isolated networks (industrial control) cannot reach a TAXII server. A collection slice is
exported as a bundle file plus `<file>.sig`, carried across, and imported there only if
the signature verifies against a trusted public key: a file without a signature, with a
signature by an unknown key, or changed after signing by a single byte is refused.

`<file>.sig` is JSON: `{"algorithm": "ed25519", "key_id": <first 16 hex digits of the
SHA-256 of the raw public key>, "sha256": <hex digest of the file>, "signature": <base64
Ed25519 signature over the file's bytes>}`. Keys are PEM files (`lianfang intel keygen`):
the private key PKCS#8 (mode 0600), the public key SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
SIGNATURE_SUFFIX = ".sig"


class SignatureError(ValueError):
    """A bundle file that must not be imported; carries the path and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class UnsignedBundle(SignatureError):
    """No detached signature next to the file."""


class TamperedBundle(SignatureError):
    """The file or its signature was changed after signing."""


class UntrustedKey(SignatureError):
    """Signed, but by a key that is not trusted here."""


class KeyFileError(ValueError):
    """A key file that cannot be used; carries the path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


@dataclass(frozen=True)
class Verified:
    """Who signed a verified file."""

    key_id: str
    key_path: Path


def signature_path(path: Path) -> Path:
    """Where a file's detached signature lives."""
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(directory: Path, name: str = "lianfang") -> tuple[Path, Path]:
    """Write `<name>.key` (private, 0600) and `<name>.pub` into a directory; refuses to overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(path, "exists; not overwriting a key")
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as sink:
        sink.write(private_pem)
    public_path.write_bytes(
        private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise KeyFileError(path, f"not a readable private key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, "not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise KeyFileError(path, f"not a readable public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, "not an Ed25519 public key")
    return key


def trusted_keys(paths: list[Path]) -> dict[str, tuple[Ed25519PublicKey, Path]]:
    """Public keys by key id, from files or folders of `*.pub` files."""
    found: dict[str, tuple[Ed25519PublicKey, Path]] = {}
    for path in paths:
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        for file in files:
            key = load_public_key(file)
            found[key_id(key)] = (key, file)
    return found


def sign_file(path: Path, private_key: Ed25519PrivateKey) -> Path:
    """Write the detached signature of a file; returns its path."""
    content = path.read_bytes()
    signature = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "sha256": hashlib.sha256(content).hexdigest(),
        "signature": base64.b64encode(private_key.sign(content)).decode("ascii"),
    }
    target = signature_path(path)
    target.write_text(json.dumps(signature, indent=1) + "\n")
    return target


def verify_file(path: Path, keys: dict[str, tuple[Ed25519PublicKey, Path]]) -> Verified:
    """Check a file against its detached signature and the trusted keys, or raise."""
    sig_path = signature_path(path)
    if not sig_path.exists():
        raise UnsignedBundle(path, f"no signature {sig_path.name}; unsigned files are refused")
    try:
        signature = json.loads(sig_path.read_text())
        algorithm = signature["algorithm"]
        signer = signature["key_id"]
        raw = base64.b64decode(signature["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as error:
        raise TamperedBundle(path, f"signature file is malformed: {error!r}") from error
    if algorithm != ALGORITHM:
        raise TamperedBundle(path, f"signature algorithm {algorithm!r} is not {ALGORITHM}")
    if signer not in keys:
        raise UntrustedKey(path, f"signed by key {signer}, which is not trusted here")
    public_key, key_path = keys[signer]
    content = path.read_bytes()
    if signature.get("sha256") != hashlib.sha256(content).hexdigest():
        raise TamperedBundle(path, "the file changed after it was signed (digest differs)")
    try:
        public_key.verify(raw, content)
    except InvalidSignature as error:
        raise TamperedBundle(path, "the signature does not match the file") from error
    return Verified(signer, key_path)
