"""A local Cloud Storage for TensorFlow's gs:// client, on 127.0.0.1 only (tests).

TensorFlow 2.21's GCS client has no emulator setting: its endpoints are fixed
(https://www.googleapis.com/storage/v1/, .../upload/storage/v1/, https://storage.googleapis.com/).
It does honour libcurl's HTTPS_PROXY, CURL_CA_BUNDLE (its CA file), GOOGLE_AUTH_TOKEN_FOR_TESTING (a
fixed token: no OAuth) and NO_GCE_CHECK. So: `gcp-storage-emulator` serves the JSON API on a
loopback port, and a small proxy here answers CONNECT for those two host names with a certificate
of a throwaway CA, reads each request, rewrites storage.googleapis.com's media paths to the
emulator's download path, and passes it on. `Emulator(workdir)` starts both; `env` is what a process
needs to use them.
"""

from __future__ import annotations

import datetime
import http.client
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

HOSTS = ("www.googleapis.com", "storage.googleapis.com")
BUCKET = "toolkit-test"


# the emulator, with one fix: it fails on an empty media upload (an empty object, or a folder marker
# such as TensorFlow's makedirs writes), taking its missing body for None instead of b""
LAUNCH = f"""
import logging, sys
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.server import create_server

upload = objects._media_upload

def media_upload(request, response, storage):
    if request.data is None:
        request._data = b""
    return upload(request, response, storage)

objects._media_upload = media_upload
logging.getLogger("").setLevel(logging.CRITICAL)
create_server("127.0.0.1", int(sys.argv[1]), in_memory=True, default_bucket="{BUCKET}").run()
"""


def _certificates(workdir: str) -> tuple:
    """(CA file, server certificate file, key file): a CA made here and a certificate for HOSTS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "toolkit test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(workdir, n) for n in ("ca.pem", "server.pem", "server.key"))
    for path, data in zip(paths, (ca.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM),
                                  key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """gcp-storage-emulator (a subprocess, in memory) behind the proxy (a thread), both on 127.0.0.1."""

    def __init__(self, workdir: str):
        ca, cert, key = _certificates(workdir)
        self.backend_port, self.proxy_port = _free_port(), _free_port()
        self.server = subprocess.Popen([sys.executable, "-c", LAUNCH, str(self.backend_port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_for(self.backend_port)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", self.proxy_port))
        self.listener.settimeout(0.5)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.env = {"HTTPS_PROXY": f"http://127.0.0.1:{self.proxy_port}", "https_proxy": f"http://127.0.0.1:{self.proxy_port}",
                    "NO_PROXY": "", "no_proxy": "", "CURL_CA_BUNDLE": ca, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
                    "NO_GCE_CHECK": "true", "GCS_RETRY_CONFIG_MAX_RETRIES": "2"}

    def _wait_for(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError("gcp-storage-emulator exited at start")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gcp-storage-emulator did not start within 30 s")

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.listener.close()
        self.server.terminate()
        self.server.wait(timeout=10)

    def _serve(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        """One CONNECT: TLS with our certificate, then requests relayed one at a time until the client closes."""
        try:
            client.settimeout(60)
            head = _read_connect(client)
            host = head.split(b" ")[1].split(b":")[0].decode()
            if not head.startswith(b"CONNECT ") or host not in HOSTS:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            with self.tls.wrap_socket(client, server_side=True) as secure, secure.makefile("rb") as reader:
                while self._relay(secure, reader, host):
                    pass
        except (OSError, ssl.SSLError, ValueError, IndexError):  # a client that went away: TensorFlow retries
            pass
        finally:
            client.close()

    def _relay(self, secure, reader, host: str) -> bool:
        """Pass one request to the emulator and its answer back; False when the client is done."""
        head = _read_head(reader)
        if not head:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        lowered = {k.lower(): v for k, v in headers.items()}
        if lowered.get("expect", "").lower() == "100-continue":  # else curl waits a second before each body
            secure.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if lowered.get("transfer-encoding", "").lower() == "chunked":
            body = _read_chunked(reader)
            headers = {k: v for k, v in headers.items() if k.lower() != "transfer-encoding"}
        else:
            body = reader.read(int(lowered.get("content-length") or 0))
        if host == "storage.googleapis.com":  # media reads: /<bucket>/<object> -> the JSON API's download
            bucket, _, name = urllib.parse.urlsplit(target).path.lstrip("/").partition("/")
            target = f"/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(urllib.parse.unquote(name), safe='')}?alt=media"
        upstream = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=60)
        # http.client sets the body's length itself (and would chunk it again if told Transfer-Encoding)
        dropped = ("host", "connection", "proxy-connection", "expect", "transfer-encoding", "content-length")
        keep = {k: v for k, v in headers.items() if k.lower() not in dropped}
        upstream.request(method, target, body=body, headers=keep)
        answer = upstream.getresponse()
        data = answer.read()
        status = answer.status
        out = [f"HTTP/1.1 {status} {answer.reason}"]
        backend = f"http://127.0.0.1:{self.backend_port}"  # a resumable upload's Location: back through the proxy
        out += [f"{k}: {v.replace(backend, 'https://' + HOSTS[0])}" for k, v in answer.getheaders()
                if k.lower() not in ("transfer-encoding", "connection", "content-length")]
        out += [f"Content-Length: {len(data)}", "Connection: keep-alive", "", ""]
        secure.sendall("\r\n".join(out).encode("latin-1") + data)
        upstream.close()
        return True


def _read_connect(sock) -> bytes:
    """The CONNECT request, byte by byte (nothing of the TLS handshake that follows may be read)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            return b""
        data += chunk
    return data


def _read_head(reader) -> bytes:
    """A request's head (up to the blank line) from a buffered reader; b"" when the client closed."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            return b""
        data += line
    return data


def _read_chunked(reader) -> bytes:
    parts = []
    while True:
        size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while reader.readline() not in (b"\r\n", b""):  # trailers
                pass
            return b"".join(parts)
        parts.append(reader.read(size))
        reader.readline()
