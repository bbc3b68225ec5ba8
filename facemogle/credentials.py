"""Content credentials: a C2PA manifest (c2pa-python) saying that an image was generated — by facemogle, with
which model — signed with the user's own key and certificate chain.

The chain is the signer's end-entity certificate (digital signature key usage, an extended key usage
such as emailProtection, subject and authority key identifiers) followed by the CA that issued it; the
tests make a throwaway CA. No time-stamp server is contacted. Readers report "Valid" for an intact manifest whose signer they cannot
trace to a trusted root, "Trusted" when they can, "Invalid" when the image or manifest was changed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import FaceMoGLEError

DIGITAL_SOURCE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"  # IPTC: AI-generated
)
ASSERTION = "org.facemogle.generation"


class CredentialsError(FaceMoGLEError, ValueError):
    """Signing or reading content credentials failed; the message says what to give instead."""


@dataclass
class SigningKey:
    """A private key (PEM) and its certificate chain (PEM, end entity first), with the C2PA algorithm."""

    key_pem: bytes
    chain_pem: bytes
    algorithm: str  # es256 | es384 | es512 | ps256 | ed25519


def load_signing_key(key_file: str | os.PathLike, chain_file: str | os.PathLike) -> SigningKey:
    """Read a PEM private key and its PEM certificate chain; the algorithm follows the key's type."""
    _c2pa()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key_pem, chain_pem = _read(key_file, "signing key"), _read(chain_file, "certificate chain")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise CredentialsError(f"{key_file} is not an unencrypted PEM private key ({error}).") from None
    if b"BEGIN CERTIFICATE" not in chain_pem:
        raise CredentialsError(f"{chain_file} holds no PEM certificate; give the signer's certificate chain.")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        algorithm = "ps256"
    else:
        algorithm = None
    if algorithm is None:
        raise CredentialsError(f"{key_file}: C2PA signs with EC P-256/384/521, Ed25519 or RSA keys only.")
    return SigningKey(key_pem, chain_pem, algorithm)


def sign_image(path: str | os.PathLike, key: SigningKey, model: str, action: str = "c2pa.created") -> None:
    """Embed a signed manifest in a saved PNG or JPEG, in place (written to a temporary, then renamed)."""
    c2pa = _c2pa()
    path = Path(path)
    manifest = {
        "claim_generator_info": [{"name": "facemogle", "version": __version__}],
        "title": path.name,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [
                {"action": action, "digitalSourceType": DIGITAL_SOURCE, "softwareAgent": {"name": "facemogle"}},
            ]}},
            {"label": ASSERTION, "data": {"generator": "facemogle", "model": model, "ai_generated": True}},
        ],
    }  # fmt: skip
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".signing{path.suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        info = c2pa.C2paSignerInfo(key.algorithm.encode(), key.chain_pem, key.key_pem, None)
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(manifest) as builder:
            builder.sign_file(path, temporary, signer)
        os.replace(temporary, path)
    except c2pa.C2paError as error:
        raise CredentialsError(
            f"Signing {path} failed ({error}); the certificate chain must start with the end-entity certificate "
            "of this key, issued by a CA, with C2PA's key usages."
        ) from None
    finally:
        temporary.unlink(missing_ok=True)


def check_signing_key(key: SigningKey) -> None:
    """Sign a small image in a temporary folder: a key and chain that cannot sign fail before any work."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe.png"
        Image.new("RGB", (8, 8)).save(probe)
        sign_image(probe, key, model="a signing check")


def read_credentials(path: str | os.PathLike) -> dict | None:
    """The image's manifest, or None without one: {"state": Valid | Trusted | Invalid, "ai_generated",
    "generator", "model", "failures": the validation failures' codes}."""
    c2pa = _c2pa()
    try:
        with c2pa.Reader(path) as reader:
            manifest = reader.get_active_manifest() or {}
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
    except c2pa.C2paError.ManifestNotFound:
        return None
    except c2pa.C2paError as error:
        raise CredentialsError(f"{path}: its content credentials cannot be read ({error}).") from None
    ours = next((a["data"] for a in manifest.get("assertions", []) if a["label"] == ASSERTION), {})
    actions = [a for x in manifest.get("assertions", []) if x["label"].startswith("c2pa.actions")
               for a in x["data"].get("actions", [])]  # fmt: skip
    failures = [f["code"] for f in results.get("activeManifest", {}).get("failure", [])]
    return {
        "state": state,
        "ai_generated": any(a.get("digitalSourceType") == DIGITAL_SOURCE for a in actions),
        "generator": ", ".join(g.get("name", "?") for g in manifest.get("claim_generator_info", [])),
        "model": ours.get("model"),
        "failures": failures,
    }


def describe(credentials: dict | None) -> str:
    """One line for `facemogle detect`."""
    if credentials is None:
        return "no content credentials"
    made = "AI-generated" if credentials["ai_generated"] else "not declared AI-generated"
    problems = [f for f in credentials["failures"] if f != "signingCredential.untrusted"]
    trust = (
        "" if "signingCredential.untrusted" not in credentials["failures"] else ", signer not in a trust list"
    )
    return (f"content credentials {credentials['state']} ({made}, by {credentials['generator']}, model "
            f"{credentials['model']}{trust}{'; ' + ', '.join(problems) if problems else ''})")  # fmt: skip


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CredentialsError(f"The {what} {path} cannot be read ({error.strerror}).") from None


def _c2pa():
    try:
        import c2pa
    except ImportError:
        raise CredentialsError(
            "Content credentials need the c2pa-python package: pip install 'facemogle[provenance]'."
        ) from None
    return c2pa
