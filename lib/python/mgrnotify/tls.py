"""TLS client contexts for every protocol the gateways speak: one policy, in one place.

Certificates are verified against the system's CA store (or ``cafile``) and the host name checked,
unless the admin turned ``verify_tls`` off for the gateway.
"""

import os


def context(verify=True, cafile=None):
    """A client TLS context: the system's CA store (or ``cafile``), hostname checked; no checks when ``verify``
    is off."""
    import ssl
    if not verify:
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    paths = ssl.get_default_verify_paths()
    # Loading the CA bundle file costs ~20 ms on every run; a hashed CA folder (Debian's /etc/ssl/certs)
    # is read lazily, one issuer at a time. RHEL's folder has no hashes: there the bundle is loaded.
    if not os.environ.get(paths.openssl_cafile_env) and _hashed_ca_folder(paths.capath):
        return ssl.create_default_context(capath=paths.capath)
    return ssl.create_default_context()


def _hashed_ca_folder(path):
    """True if ``path`` is a CA folder with OpenSSL's hash links (``5ad8a5d6.0``)."""
    try:
        names = os.listdir(path) if path else ()
    except OSError:
        return False
    return any(len(n) == 10 and n.endswith(".0") for n in names)
