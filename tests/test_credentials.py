import datetime

import pytest
from PIL import Image

pytest.importorskip("c2pa")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from facemogle.credentials import CredentialsError, describe, load_signing_key, read_credentials, sign_image  # noqa: E402

USAGE = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
             encipher_only=False, decipher_only=False)  # fmt: skip


def _certificate(subject, issuer, public_key, signing_key, ca: bool):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **USAGE), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )  # fmt: skip
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    """A throwaway CA and an end-entity certificate it issued, with the extensions C2PA wants."""
    folder = tmp_path_factory.mktemp("keys")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(_name("test CA"), _name("test CA"), ca_key.public_key(), ca_key, ca=True)
    signer = _certificate(_name("facemogle test signer"), ca.subject, key.public_key(), ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (folder / "chain.pem").write_bytes(signer.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    other = ec.generate_private_key(ec.SECP256R1())  # a certificate for another key than key.pem
    stranger = _certificate(_name("someone else"), ca.subject, other.public_key(), ca_key, ca=False)
    (folder / "other.pem").write_bytes(stranger.public_bytes(pem) + ca.public_bytes(pem))
    return folder


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_signed_image_reads_back_and_a_tampered_one_is_rejected(credentials, tmp_path, suffix):
    path = tmp_path / f"face{suffix}"
    Image.new("RGB", (128, 128), (120, 80, 60)).save(path)
    assert read_credentials(path) is None and describe(None) == "no content credentials"
    sign_image(
        path, load_signing_key(credentials / "key.pem", credentials / "chain.pem"), model="facemogle v2"
    )
    read = read_credentials(path)
    assert read["state"] == "Valid" and read["source"] == "AI-generated" and read["model"] == "facemogle v2"
    assert "facemogle" in read["generator"] and read["failures"] == ["signingCredential.untrusted"]
    assert "AI-generated" in describe(read) and "signer not in a trust list" in describe(read)
    assert Image.open(path).size == (128, 128) and not list(tmp_path.glob(".*signing*"))
    data = bytearray(path.read_bytes())
    position = data.find(b"IDAT") + 10 if suffix == ".png" else len(data) - 10  # inside the pixel data
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    tampered = read_credentials(path)
    assert tampered["state"] == "Invalid" and "assertion.dataHash.mismatch" in tampered["failures"]


def test_bad_keys_and_certificates_get_a_clear_error(credentials, tmp_path):
    with pytest.raises(CredentialsError, match="cannot be read"):
        load_signing_key(tmp_path / "missing.pem", credentials / "chain.pem")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(CredentialsError, match="not an unencrypted PEM private key"):
        load_signing_key(tmp_path / "junk.pem", credentials / "chain.pem")
    with pytest.raises(CredentialsError, match="no PEM certificate"):
        load_signing_key(credentials / "key.pem", tmp_path / "junk.pem")
    path = tmp_path / "face.png"
    Image.new("RGB", (128, 128)).save(path)
    before = path.read_bytes()
    with pytest.raises(CredentialsError, match="end-entity certificate of this key"):
        sign_image(path, load_signing_key(credentials / "key.pem", credentials / "other.pem"), model="m")
    assert path.read_bytes() == before  # a failed signing leaves the image as it was
    with pytest.raises(CredentialsError, match="Unknown manifest action 'c2pa.painted'"):
        sign_image(path, load_signing_key(credentials / "key.pem", credentials / "chain.pem"), model="m",
                   action="c2pa.painted")  # fmt: skip


def test_generate_signs_and_detect_reports_the_watermark_and_the_credentials(credentials, tmp_path, capsys):
    import torch
    from conftest import face_like_labels

    from facemogle.cli import main
    from facemogle.labels import save_mask
    from facemogle.model import FaceMoGLEModel, config_for_size
    from facemogle.pipeline import FaceMoGLEPipeline, model_fingerprint

    torch.manual_seed(0)
    FaceMoGLEPipeline(FaceMoGLEModel(config_for_size("tiny", resolution=128, patch_size=16))).save_pretrained(
        tmp_path / "m"
    )
    save_mask(face_like_labels(128), tmp_path / "mask.png")
    keys = ["--sign-key", str(credentials / "key.pem"), "--sign-cert", str(credentials / "chain.pem")]
    generate = [
        "generate",
        "--model",
        str(tmp_path / "m"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--steps",
        "1",
    ]
    assert main([*generate, "--out", str(tmp_path / "signed.png"), *keys]) == 0
    assert main([*generate, "--out", str(tmp_path / "plain.png"), "--no-watermark"]) == 0
    Image.new("RGB", (64, 64)).save(tmp_path / "small.png")
    capsys.readouterr()
    files = [str(tmp_path / n) for n in ("signed.png", "plain.png", "small.png")]
    assert main(["detect", "--watermark", *files]) == 0
    signed, plain, small = capsys.readouterr().out.strip().splitlines()
    assert "watermark found (32/32" in signed and "content credentials Valid (AI-generated" in signed
    assert (
        f"model m (sha1 {model_fingerprint(tmp_path / 'm')[:12]})" in signed
        and str(tmp_path) not in signed.split(": ", 1)[1]
    )
    assert "watermark not found" in plain and "no content credentials" in plain
    assert "watermark not readable" in small and "too small" in small
    edit = ["edit", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "plain.png"), "--source-mask",
            str(tmp_path / "mask.png"), "--op", "regenerate", "--steps", "1", "--out", str(tmp_path / "edited.png")]  # fmt: skip
    assert main([*edit, *keys]) == 0
    capsys.readouterr()
    assert main(["detect", str(tmp_path / "edited.png")]) == 0
    assert "content credentials Valid (AI-edited" in capsys.readouterr().out  # a composite, not all made
    mismatched = ["--sign-key", str(credentials / "key.pem"), "--sign-cert", str(credentials / "other.pem")]
    assert main([*generate, "--out", str(tmp_path / "y.png"), *mismatched]) == 2  # fails before generating
    assert (
        "end-entity certificate of this key" in capsys.readouterr().err and not (tmp_path / "y.png").exists()
    )
    assert (
        main([*generate, "--out", str(tmp_path / "x.png"), "--sign-key", str(credentials / "key.pem")]) == 2
    )
    assert "needs both --sign-key" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    (tmp_path / "notes.png").write_text("not an image")
    assert main(["detect", str(tmp_path / "notes.png")]) == 2
    assert "not a readable image" in capsys.readouterr().err
