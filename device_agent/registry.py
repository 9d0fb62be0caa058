"""A small OCI distribution client on the standard library: agents pull bundles and engines with it, the host pushes.

Why not a library: the agent may depend on grpcio, protobuf and numpy only, and the part of the distribution API
we need is five calls (GET/HEAD manifests and blobs, POST+PUT a blob upload, PUT a manifest). Digests are checked
by the caller while it streams (the store and the engine cache already hash what they write), so this module only
moves bytes, authenticates and retries a lost connection.
"""
from __future__ import annotations

import base64
import http.client
import hashlib
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar

from .bounded_json import loads_bounded
from .errors import DataLoss, DeployError, InvalidInput, NotFound, Unauthenticated, Unavailable

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
BUNDLE_ARTIFACT = "application/vnd.jetson-deploy.bundle.v1"
BUNDLE_LAYER = "application/vnd.jetson-deploy.bundle.v1.tar"
# a bundle by parts (device_agent/parts.py): one layer per part, stored once per repository across versions, and
# the bundle's manifest (whose digest is the bundle's) as the last layer
BUNDLE_PART_LAYER = "application/vnd.jetson-deploy.bundle.part.v1"
BUNDLE_MANIFEST_LAYER = "application/vnd.jetson-deploy.bundle.manifest.v1+json"
ENGINES_ARTIFACT = "application/vnd.jetson-deploy.engines.v1"
ENGINE_LAYER = "application/vnd.jetson-deploy.engine.v1"
TIMING_CACHE_LAYER = "application/vnd.jetson-deploy.timing-cache.v1"  # absent when the builder has none
ANN_KEY = "org.jetson-deploy.engine.key"
ANN_PARTS = "org.jetson-deploy.engine.parts"
ANN_BUILDER = "org.jetson-deploy.engine.builder"  # the building agent's signed record (device_agent/engine_seal.py)
ANN_BUNDLE = "org.jetson-deploy.bundle.digest"
ANN_CLASS = "org.jetson-deploy.device-class"
CLASS_ARTIFACT = "application/vnd.jetson-deploy.class.v1"  # what a class should hold now (tag class_tag(class))
ANN_ENGINES = "org.jetson-deploy.engines.reference"  # on a class artifact: the engines artifact's tag
ANN_TIMING_FACTS = "org.jetson-deploy.timing-cache.facts"  # the class facts as canonical JSON (TimingCacheInfo.facts)
ANN_TIMING_CLASS_DIGEST = "org.jetson-deploy.timing-cache.class-digest"
# On a class artifact, optional: the model version that should be active on the class's polling agents
ANN_MODEL_NAME = "org.jetson-deploy.model.name"  # record the class's bundle as a version of this name, activate it
ANN_MODEL_TOLERANCE = "org.jetson-deploy.model.tolerance"  # the agent's own verify bound (a float > 0, as text)
ANN_MODEL_OPTIONS = "org.jetson-deploy.model.options"  # the build options of the engines, canonical JSON
ANN_MODEL_ACTIVE = "org.jetson-deploy.model.active"  # "none": no version of the name active (then no tolerance)
MODEL_OPTION_FIELDS = {"backend": str, "fp16": bool, "max_workspace_bytes": int, "multi_engine_mode": int,
                       "batch": int}  # BuildOptions' fields a target may set (absent: the agent's default)

MAX_MANIFEST_BYTES = 4 << 20
MAX_TOKEN_REPLY_BYTES = 1 << 20
MAX_LAYERS = 256
CHUNK = 1 << 20
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")

T = TypeVar("T")


def sha256_hex(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """A `sha256:<64 hex>` digest, else InvalidInput (it ends up in a URL path)."""
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise InvalidInput(f"not a sha256 digest: {digest[:80]!r}")
    return digest


@dataclass(frozen=True)
class RegistryRef:
    """`[http(s)://]HOST[:PORT]/REPO`; without a scheme, plain http on loopback only, https elsewhere."""

    scheme: str
    host: str
    repo: str

    @classmethod
    def parse(cls, text: str) -> "RegistryRef":
        scheme = ""
        rest = text.strip()
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
        host, _, repo = rest.partition("/")
        repo = repo.strip("/")
        if scheme not in ("", "http", "https") or not host or not repo:
            raise InvalidInput(f"registry {text!r} is not [https://]HOST[:PORT]/REPO")
        if any(not part or not all(c.isalnum() or c in "._-" for c in part) for part in repo.split("/")) \
                or repo != repo.lower():
            raise InvalidInput(f"registry repository {repo!r} must be lower-case path components of [a-z0-9._-]")
        if not scheme:
            scheme = "http" if host.rsplit(":", 1)[0] in _LOOPBACK or host in _LOOPBACK else "https"
        return cls(scheme, host, repo)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}/{self.repo}"


@dataclass
class Credentials:
    """A bearer token, or basic auth (also used to get a token from the registry's token service); never shown."""

    token: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: Optional[Path] = None

    @classmethod
    def from_files(cls, token_file: Optional[Path] = None, username: str = "",
                   password_file: Optional[Path] = None, ca_file: Optional[Path] = None) -> "Credentials":
        token = Path(token_file).read_text().strip() if token_file else ""
        password = Path(password_file).read_text().strip() if password_file else ""
        return cls(token, username, password, Path(ca_file) if ca_file else None)


@dataclass
class RetryPolicy:
    attempts: int = 6
    first_s: float = 0.2
    max_s: float = 2.0


class RegistryClient:
    """The calls of one repository; thread-safe (each call opens its own connection)."""

    def __init__(self, ref: RegistryRef, credentials: Optional[Credentials] = None, *, timeout: float = 30.0,
                 retry: Optional[RetryPolicy] = None) -> None:
        self.ref = ref
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._bearer = self.credentials.token
        self._ssl = ssl.create_default_context(cafile=str(self.credentials.ca_file)) \
            if ref.scheme == "https" and self.credentials.ca_file else None
        self.bytes_sent = 0  # totals over every thread using this client; each call also returns its own
        self.bytes_received = 0

    # -- plumbing
    def _url(self, path: str) -> str:
        return f"{self.ref.scheme}://{self.ref.host}/v2/{self.ref.repo}/{path}"

    def _auth_header(self) -> Dict[str, str]:
        if self._bearer:
            return {"Authorization": f"Bearer {self._bearer}"}
        return self._basic_header()

    def _basic_header(self) -> Dict[str, str]:
        """HTTP basic auth with the registry user, for the registry and its token service alike (none without)."""
        if self.credentials.username:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _token_from_challenge(self, challenge: str) -> bool:
        """Answer a `Bearer realm=...` challenge with the token service (basic auth if we have it)."""
        if not challenge.lower().startswith("bearer ") or self.credentials.token:
            return False
        params = dict(p.split("=", 1) for p in _split_params(challenge[7:]))
        params = {k.strip(): v.strip().strip('"') for k, v in params.items()}
        realm = params.pop("realm", "")
        if not realm:
            return False
        # the token request names only what the spec defines (service, scope); `error=` etc. stay out
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(
            {k: v for k, v in params.items() if k in ("service", "scope")})
        where = f"registry token service {urllib.parse.urlsplit(url).netloc}"
        try:
            with self._urlopen(urllib.request.Request(url, headers=self._basic_header())) as r:
                raw_body = r.read(MAX_TOKEN_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise Unauthenticated(f"{where}: HTTP {exc.code}; check the registry credentials "
                                      "(--registry-user and --registry-password-file)") from None
            raise Unavailable(f"{where}: HTTP {exc.code}") from None
        body = loads_bounded(raw_body, MAX_TOKEN_REPLY_BYTES, lambda why: Unavailable(f"{where} answered {why}"))
        if not isinstance(body, dict):
            raise Unavailable(f"{where} answered no JSON object")
        self._bearer = body.get("token") or body.get("access_token") or ""
        return bool(self._bearer)

    def _urlopen(self, req: urllib.request.Request) -> Any:
        """urlopen with our TLS context; a certificate we do not trust is one clear error, never retried."""
        try:
            return urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl)
        except (urllib.error.URLError, ssl.SSLError) as exc:
            bad = exc if isinstance(exc, ssl.SSLCertVerificationError) else getattr(exc, "reason", None)
            if isinstance(bad, ssl.SSLCertVerificationError):
                why = bad.verify_message or _first_line(bad)
                host = urllib.parse.urlsplit(req.full_url).netloc
                raise Unauthenticated(
                    f"registry {host}: its TLS certificate is not trusted ({why}); pass the CA it chains to, the "
                    f"fleet CA (agent: --registry-ca FILE; host: $DEPLOY_REGISTRY_CA)"
                    + ("" if self.credentials.ca_file is None else f"; {self.credentials.ca_file} is not it")
                ) from None
            raise

    def _open(self, method: str, url: str, headers: Optional[Dict[str, str]] = None,
              data: Any = None) -> Any:
        """One request, answering one auth challenge; HTTP errors as our exceptions."""
        for attempt in range(2):
            if attempt and hasattr(data, "seek"):
                data.seek(0)  # the first try may have read some of the body before the 401
            req = urllib.request.Request(url, data=data, method=method,
                                         headers={**(headers or {}), **self._auth_header()})
            try:
                return self._urlopen(req)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0 and self._token_from_challenge(
                        exc.headers.get("WWW-Authenticate", "")):
                    continue
                raise _http_error(method, url, exc) from None
        raise Unauthenticated(f"registry {self.ref.host} refused our credentials")

    def retried(self, what: str, fn: Callable[[], T]) -> T:
        """`fn` again after a lost connection or a 5xx, with exponential backoff; other errors at once."""
        delay = self.retry.first_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except (Unavailable, OSError, http.client.HTTPException) as exc:
                if attempt == self.retry.attempts:
                    raise Unavailable(f"registry {self.ref.host}: {what} failed {attempt} times: "
                                      f"{_first_line(exc)}") from None
                time.sleep(delay)
                delay = min(self.retry.max_s, delay * 2)
        raise AssertionError("unreachable")

    # -- reading
    def manifest(self, reference: str) -> Tuple[Dict[str, Any], str]:
        """The OCI manifest at a tag or digest, and its digest (checked against a digest reference)."""
        if reference.startswith("sha256:"):
            check_digest(reference)
        elif not reference or len(reference) > 128 or not all(c.isalnum() or c in "._-" for c in reference):
            raise InvalidInput(f"not a tag or digest: {reference[:80]!r}")

        def once() -> Tuple[bytes, str]:
            with self._open("GET", self._url(f"manifests/{reference}"), {"Accept": MANIFEST_TYPE}) as r:
                body = r.read(MAX_MANIFEST_BYTES + 1)
                return body, r.headers.get("Docker-Content-Digest", "")

        body, header = self.retried(f"GET manifest {reference}", once)
        self.bytes_received += len(body)
        if len(body) > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"manifest {reference} is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = sha256_hex(body)
        expected = reference if reference.startswith("sha256:") else header
        if expected and expected != digest:
            raise DataLoss(f"manifest {reference} hashes to {digest}, not {expected}; refused")
        doc = loads_bounded(body, MAX_MANIFEST_BYTES, lambda why: InvalidInput(f"manifest {reference} is {why}"))
        if not isinstance(doc, dict) or not isinstance(doc.get("layers", []), list) or \
                len(doc.get("layers", [])) > MAX_LAYERS:
            raise InvalidInput(f"manifest {reference} is not an OCI image manifest of at most {MAX_LAYERS} layers")
        return doc, digest

    def blob_chunks(self, digest: str, offset: int = 0) -> Tuple[int, Iterator[bytes]]:
        """(the offset the bytes really start at, an iterator of them); a Range request when offset > 0."""
        check_digest(digest)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        r = self._open("GET", self._url(f"blobs/{digest}"), headers)
        start = offset if r.status == 206 else 0

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    block = r.read(CHUNK)
                    if not block:
                        return
                    self.bytes_received += len(block)
                    yield block
            finally:
                r.close()

        return start, chunks()

    # -- writing (the host)
    def has_blob(self, digest: str) -> bool:
        check_digest(digest)

        def once() -> bool:
            try:
                with self._open("HEAD", self._url(f"blobs/{digest}")):
                    return True
            except NotFound:
                return False

        return self.retried(f"HEAD blob {digest}", once)

    def push_blob(self, digest: str, size: int, open_body: Callable[[], Any]) -> bool:
        """Upload one blob unless the registry has it (monolithic POST + PUT); True when bytes were sent."""
        if self.has_blob(digest):
            return False

        def once() -> None:
            with self._open("POST", self._url("blobs/uploads/"), data=b"") as r:
                location = r.headers.get("Location", "")
            if not location:
                raise InvalidInput(f"registry {self.ref.host} gave no upload location")
            url = urllib.parse.urljoin(self._url("blobs/uploads/"), location)
            url += ("&" if "?" in url else "?") + "digest=" + urllib.parse.quote(digest)
            body = open_body()
            try:
                with self._open("PUT", url, {"Content-Type": "application/octet-stream",
                                             "Content-Length": str(size)}, data=body):
                    pass
            finally:
                if hasattr(body, "close"):
                    body.close()
            self.bytes_sent += size

        self.retried(f"upload blob {digest}", once)
        return True

    def push_file(self, path: Path, digest: Optional[str] = None) -> Tuple[str, int, bool]:
        """(digest, size, sent) of a file pushed as a blob."""
        from .fileio import sha256_file

        digest = digest or sha256_file(path)
        size = Path(path).stat().st_size
        sent = self.push_blob(digest, size, lambda: open(path, "rb"))
        return digest, size, sent

    def push_bytes(self, data: bytes) -> Tuple[str, int, bool]:
        digest = sha256_hex(data)
        return digest, len(data), self.push_blob(digest, len(data), lambda: data)

    def push_manifest(self, reference: str, manifest: Dict[str, Any]) -> Tuple[str, int]:
        """(digest, bytes sent) of the manifest put at `reference`."""
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()

        def once() -> None:
            with self._open("PUT", self._url(f"manifests/{reference}"), {"Content-Type": MANIFEST_TYPE},
                            data=body):
                pass
            self.bytes_sent += len(body)

        self.retried(f"PUT manifest {reference}", once)
        return sha256_hex(body), len(body)


def artifact_manifest(artifact_type: str, layers: list, annotations: Optional[Dict[str, str]] = None
                      ) -> Dict[str, Any]:
    """An OCI 1.1 artifact manifest: the empty config, our artifactType, the given layer descriptors."""
    doc: Dict[str, Any] = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG_TYPE, "digest": sha256_hex(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": layers,
    }
    if annotations:
        doc["annotations"] = annotations
    return doc


@dataclass(frozen=True)
class ModelTarget:
    """What a class artifact may name beside its bundle: record that bundle as a version of `name` (verified by the
    agent with `tolerance`, its engines those of `options`) and make it the active one; or, with `active` False,
    have no version of `name` active (as Deactivate)."""

    name: str
    tolerance: float
    options: Dict[str, Any] = field(default_factory=dict)  # MODEL_OPTION_FIELDS that are set
    active: bool = True

    def annotations(self) -> Dict[str, str]:
        if not self.active:
            return {ANN_MODEL_NAME: self.name, ANN_MODEL_ACTIVE: "none"}
        ann = {ANN_MODEL_NAME: self.name, ANN_MODEL_TOLERANCE: repr(float(self.tolerance))}
        if self.options:
            ann[ANN_MODEL_OPTIONS] = json.dumps(self.options, sort_keys=True, separators=(",", ":"))
        return ann

    @classmethod
    def from_annotations(cls, ann: Dict[str, Any]) -> "Optional[ModelTarget]":
        """None when the artifact names no model; InvalidInput when what it names does not parse."""
        name = ann.get(ANN_MODEL_NAME)
        if name is None:
            return None
        from .models import check_name

        check_name(str(name))
        if ANN_MODEL_ACTIVE in ann:
            if ann[ANN_MODEL_ACTIVE] != "none":
                raise InvalidInput(f"model {name!r}: {ANN_MODEL_ACTIVE} {str(ann[ANN_MODEL_ACTIVE])[:40]!r} is not "
                                   "'none'")
            return cls(str(name), 0.0, {}, active=False)
        try:
            tolerance = float(str(ann.get(ANN_MODEL_TOLERANCE, "")))
        except ValueError:
            tolerance = float("nan")
        if not tolerance > 0 or tolerance == float("inf"):
            raise InvalidInput(f"model {name!r}: {ANN_MODEL_TOLERANCE} {str(ann.get(ANN_MODEL_TOLERANCE))[:40]!r} "
                               "is not a number above 0")
        options: Any = {}
        if ann.get(ANN_MODEL_OPTIONS):
            try:
                options = json.loads(str(ann[ANN_MODEL_OPTIONS]))
            except ValueError:
                options = None
            if not isinstance(options, dict) or any(
                    k not in MODEL_OPTION_FIELDS or type(v) is not MODEL_OPTION_FIELDS[k]
                    or (type(v) is int and not 0 <= v < 2 ** 63) for k, v in options.items()):
                raise InvalidInput(f"model {name!r}: {ANN_MODEL_OPTIONS} must be a JSON object of "
                                   f"{', '.join(MODEL_OPTION_FIELDS)} with their types (integers >= 0)")
        return cls(str(name), tolerance, options)


def engines_tag(bundle_digest: str, device_class: str) -> str:
    """The tag of a class's engines for a bundle: both are in it, hashed (a tag is at most 128 of [\\w.-])."""
    check_digest(bundle_digest)
    return "engines-" + hashlib.sha256(f"{bundle_digest}|{device_class}".encode()).hexdigest()[:48]


def class_tag(device_class: str) -> str:
    """The tag of a class's current artifact (bundle + engines to hold), which agents with --registry-poll-s poll."""
    return "class-" + hashlib.sha256(device_class.encode()).hexdigest()[:48]


def bundle_tag(bundle_digest: str) -> str:
    return "bundle-" + check_digest(bundle_digest)[7:]


def _split_params(text: str) -> list:
    out, cur, quoted = [], "", False
    for c in text:
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += c
    if cur.strip():
        out.append(cur)
    return [p for p in out if "=" in p]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _http_error(method: str, url: str, exc: urllib.error.HTTPError) -> DeployError:
    where = f"registry {method} {urllib.parse.urlsplit(url).path}"
    if exc.code == 404:
        return NotFound(f"{where}: not found (404)")
    if exc.code in (401, 403):
        return Unauthenticated(f"{where}: HTTP {exc.code}; check the registry credentials")
    if exc.code >= 500 or exc.code == 429:
        return Unavailable(f"{where}: HTTP {exc.code}")
    return InvalidInput(f"{where}: HTTP {exc.code} {exc.reason}")
