"""Validates the Kubernetes manifests of deploy/kubernetes without a cluster.

Run by deploy/kubernetes/validate.sh (the Kubernetes step of
./scripts/test.sh), which installs what this needs. For each variant (the
base, overlays/secret-certificate, overlays/acme):

1. Renders it with `kubectl kustomize` when a kubectl whose kustomize is v4 or
   newer is at hand, and always with the small renderer below, which does
   exactly what these kustomization files use (resources, namespace, images,
   configMapGenerator, strategic-merge patches); with kubectl both renderings
   must agree, without it the built-in one is validated (and says so).
2. Validates every rendered object with kubernetes-validate, strictly
   (unknown fields are errors), against each of KUBERNETES_VERSIONS. A kind
   it has no schema for fails, except cert-manager's Certificate, which is
   checked against CERTIFICATE_SCHEMA below (the fields these manifests use,
   written from cert-manager's v1 API).
3. Checks what the manifests promise each other and tlsfront (see
   `project_checks`): the drain timing against tlsfront.toml, probes on the
   admin port, non-root and read-only, the admin port kept out of the
   Service and the NetworkPolicy, the Secret mounted as a directory, the
   ACME volume ReadWriteMany at acme.storage, ...
4. Runs `tlsfront check` on each variant's tlsfront.toml when a built binary
   is at hand ($TLSFRONT_BIN, else the newest of target/{release,debug}),
   with the in-cluster paths moved into a temporary directory.
5. Negative controls: a few broken copies of the rendered objects must be
   refused by the same checks, so that a check that passes everything is
   noticed.

Prints one line per check; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.version import __version__ as KV_VERSION

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VARIANTS = ["base", "overlays/secret-certificate", "overlays/acme"]
# The oldest release these manifests are written for (kube-proxy's use of
# terminating endpoints, ProxyTerminatingEndpoints, is on by default since
# 1.26 and GA in 1.28) and the newest the pinned kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.28", "1.37"]
NAMESPACE = "tlsfront"
APP_LABELS = {"app.kubernetes.io/name": "tlsfront"}
UID = 10001
CONFIG_PATH = "/etc/tlsfront/tlsfront.toml"

failures: list[str] = []
# The variant being checked, to name it in the closing list of failures.
section = ""


def check(ok: bool, what: str, detail: str = "") -> bool:
    if ok:
        print(f"  ok    {what}")
    else:
        print(f"  FAIL  {what}" + (f": {detail}" if detail else ""))
        failures.append(f"{section}: {what}" if section and not what.startswith(section) else what)
    return ok


# ------------------------------------------------------------------ rendering


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def merge_strategic(base, patch):
    """The part of a strategic-merge patch these manifests use: maps merge
    key by key, lists of maps with a `name` merge item by item (new items
    go first, as kustomize puts them), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge_strategic(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        in_base = {i["name"] for i in base}
        by_name = {i["name"]: i for i in patch}
        added = [copy.deepcopy(i) for i in patch if i["name"] not in in_base]
        kept = [merge_strategic(i, by_name[i["name"]]) if i["name"] in by_name else copy.deepcopy(i) for i in base]
        return added + kept
    return copy.deepcopy(patch)


KNOWN_KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "configMapGenerator",
    "patches",
}


def render_builtin(directory: Path) -> list[dict]:
    """Renders a kustomization with exactly the features these files use;
    ConfigMaps keep their plain names (kustomize adds a content hash)."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(k) - KNOWN_KUSTOMIZATION_KEYS
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unknown)}, which the built-in renderer does not know")
    objects: list[dict] = []
    for entry in k.get("resources", []):
        path = directory / entry
        objects.extend(render_builtin(path) if path.is_dir() else load_yaml_docs(path))
    for gen in k.get("configMapGenerator", []):
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": gen["name"]},
            "data": {Path(f).name: (directory / f).read_text(encoding="utf-8") for f in gen["files"]},
        }
        existing = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == gen["name"]]
        if gen.get("behavior") == "replace":
            if not existing:
                raise ValueError(f"{directory}: configMapGenerator {gen['name']} replaces nothing")
            objects.remove(existing[0])
        elif existing:
            raise ValueError(f"{directory}: configMapGenerator {gen['name']} exists already")
        objects.append(cm)
    for p in k.get("patches", []):
        for patch in load_yaml_docs(directory / p["path"]):
            targets = [
                i
                for i, o in enumerate(objects)
                if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]
            ]
            if len(targets) != 1:
                raise ValueError(f"{directory}/{p['path']}: patch matches {len(targets)} objects")
            objects[targets[0]] = merge_strategic(objects[targets[0]], patch)
    for img in k.get("images", []):
        for o in objects:
            for c in pod_spec(o).get("containers", []) if pod_spec(o) else []:
                if c.get("image") == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    if "namespace" in k:
        for o in objects:
            if o["kind"] != "Namespace":
                o.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objects


def kustomize_version(kubectl: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"Kustomize Version: v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


def render_kubectl(kubectl: str, directory: Path) -> list[dict]:
    out = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


HASH_SUFFIX = re.compile(r"^(tlsfront-config)-[a-z0-9]{10}$")


def normalised(objects: list[dict]) -> list[str]:
    """Objects as comparable text: ConfigMap hash suffixes dropped, lists
    of named items sorted by name."""

    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            items = [norm(x) for x in v]
            if all(isinstance(i, dict) and "name" in i for i in items):
                items.sort(key=lambda i: str(i["name"]))
            return items
        if isinstance(v, str):
            m = HASH_SUFFIX.match(v)
            return m.group(1) if m else v
        return v

    return sorted(json.dumps(norm(o), sort_keys=True) for o in objects)


# ------------------------------------------------------------------ schemas

# cert-manager's Certificate (cert-manager.io/v1), the fields these manifests
# use and their neighbours, written from cert-manager's API reference. Strict
# like kubernetes-validate's strict schemas: an unknown field is an error.
CERTIFICATE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"},
        "kind": {"const": "Certificate"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["secretName", "issuerRef"],
            "additionalProperties": False,
            "properties": {
                "secretName": {"type": "string", "minLength": 1},
                "commonName": {"type": "string"},
                "dnsNames": {"type": "array", "items": {"type": "string"}},
                "ipAddresses": {"type": "array", "items": {"type": "string"}},
                "duration": {"type": "string"},
                "renewBefore": {"type": "string"},
                "revisionHistoryLimit": {"type": "integer"},
                "usages": {"type": "array", "items": {"type": "string"}},
                "issuerRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "group": {"type": "string"},
                    },
                },
                "privateKey": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                },
                "secretTemplate": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
            },
        },
    },
}


def schema_errors(obj: dict) -> list[str]:
    """Every schema error of `obj`, for every version; [] when it passes."""
    errors = []
    if obj.get("apiVersion") == "cert-manager.io/v1" and obj.get("kind") == "Certificate":
        for e in jsonschema.Draft202012Validator(CERTIFICATE_SCHEMA).iter_errors(obj):
            errors.append(f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
        return errors
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"Kubernetes {version}: {'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"Kubernetes {version}: {e.message}")
    return errors


# ------------------------------------------------------------------ project checks


def pod_spec(o: dict) -> dict | None:
    if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        return o["spec"]["template"]["spec"]
    return None


def parse_duration(text: str) -> float:
    """A humantime duration as tlsfront reads it ("25s", "1m 30s", "250ms")."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "days": 86400}
    total = 0.0
    parts = re.findall(r"(\d+)\s*([a-z]+)", text)
    if not parts or re.sub(r"(\d+)\s*([a-z]+)|\s", "", text):
        raise ValueError(f"not a duration: {text!r}")
    for number, unit in parts:
        total += int(number) * units[unit]
    return total


def one(objects: list[dict], kind: str) -> dict | None:
    found = [o for o in objects if o["kind"] == kind]
    return found[0] if len(found) == 1 else None


def tlsfront_config(objects: list[dict], deployment: dict) -> tuple[dict, str]:
    """The tlsfront.toml the Deployment mounts at CONFIG_PATH, parsed, and its text."""
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_PATH)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    )
    text = cm["data"][mount["subPath"]]
    return tomllib.loads(text), text


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def project_checks(variant: str, objects: list[dict], report=check) -> None:
    """What the manifests promise, on one rendered variant. `report` is
    `check`, or a collector for the negative controls."""
    dep = one(objects, "Deployment")
    if not report(dep is not None, "exactly one Deployment"):
        return
    spec = pod_spec(dep)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    containers = spec["containers"]
    report(len(containers) == 1, "one container", f"{len(containers)}")
    c = containers[0]
    config, _ = tlsfront_config(objects, dep)
    limits = config.get("limits", {})
    delay = parse_duration(limits.get("shutdown_delay", "0s"))
    timeout = parse_duration(limits.get("shutdown_timeout", "30s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)

    # Every namespaced object in the one namespace; selectors select the pods.
    stray = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in objects
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE
    ]
    report(not stray, f"every object is in namespace {NAMESPACE}", ", ".join(stray))
    report(
        dep["spec"]["selector"]["matchLabels"].items() <= labels.items() and APP_LABELS.items() <= labels.items(),
        "the Deployment's selector matches its pods",
    )

    # The drain: shutdown_delay, readiness, terminationGracePeriodSeconds, no preStop.
    report(delay > 0, "tlsfront.toml sets limits.shutdown_delay", f"{limits.get('shutdown_delay')!r}")
    report(
        grace > delay + timeout,
        "terminationGracePeriodSeconds > shutdown_delay + shutdown_timeout",
        f"{grace} <= {delay:g} + {timeout:g}",
    )
    ready = c.get("readinessProbe", {})
    period, fails = ready.get("periodSeconds", 10), ready.get("failureThreshold", 3)
    report(
        period * (fails + 1) <= delay,
        "the pod is marked not ready, and kube-proxy told (one more probe period), before tlsfront stops accepting",
        f"{period} s x ({fails} + 1) > shutdown_delay {delay:g} s",
    )
    report(
        "preStop" not in c.get("lifecycle", {}),
        "no preStop hook (limits.shutdown_delay does its work)",
    )

    # Probes on the admin endpoint, which listens where the probes go.
    admin = config.get("admin", {}).get("listen", "")
    report(
        admin.startswith("0.0.0.0:") or admin.startswith("[::]:"),
        "admin.listen is on the pod's interfaces (the kubelet probes the pod IP)",
        repr(admin),
    )
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    admin_port = port_of(admin) if admin else None
    report(ports.get("admin") == admin_port, "container port `admin` is admin.listen's port", f"{ports} vs {admin}")
    live = c.get("livenessProbe", {}).get("httpGet", {})
    report(
        live.get("path") == "/healthz" and live.get("port") in ("admin", admin_port),
        "liveness probe: GET /healthz on the admin port",
        str(live),
    )
    want_ready = "/healthz" if variant == "overlays/acme" else "/readyz"
    rget = ready.get("httpGet", {})
    report(
        rget.get("path") == want_ready and rget.get("port") in ("admin", admin_port),
        f"readiness probe: GET {want_ready} on the admin port",
        str(rget),
    )
    report(
        ports.get("https") == port_of(config["listen"]["https"])
        and ports.get("http") == port_of(config["listen"].get("http", ":0")),
        "container ports https/http are listen.https/listen.http",
        f"{ports}",
    )

    # Non-root, read-only, nothing extra.
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    report(
        psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID and psc.get("runAsGroup") == UID,
        f"runs as uid/gid {UID}, runAsNonRoot",
    )
    report(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    report(
        csc.get("readOnlyRootFilesystem") is True
        and csc.get("allowPrivilegeEscalation") is False
        and csc.get("capabilities", {}).get("drop") == ["ALL"],
        "read-only root filesystem, no privilege escalation, every capability dropped",
    )
    report(spec.get("automountServiceAccountToken") is False, "no service account token in the pod")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    report(env.get("TLSFRONT_CONFIG") == CONFIG_PATH, f"TLSFRONT_CONFIG is {CONFIG_PATH}")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    certs_dir = config.get("tls", {}).get("self_signed_dir")
    if certs_dir and not config.get("tls", {}).get("cert"):
        m = mounts.get(certs_dir)
        report(
            m is not None and "emptyDir" in volumes.get(m["name"], {}) and not m.get("readOnly"),
            "tls.self_signed_dir is a writable emptyDir (the root filesystem is read-only)",
        )

    # The autoscaler owns the count; at least 3; on CPU, which is requested.
    hpa = one(objects, "HorizontalPodAutoscaler")
    if report(hpa is not None, "a HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        report(ref["kind"] == "Deployment" and ref["name"] == dep["metadata"]["name"], "it scales the Deployment")
        report(hpa["spec"].get("minReplicas", 1) >= 3, "minReplicas >= 3", str(hpa["spec"].get("minReplicas")))
        cpu = [
            m for m in hpa["spec"].get("metrics", []) if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
        ]
        report(bool(cpu), "it scales on CPU")
        report("cpu" in c.get("resources", {}).get("requests", {}), "the container requests CPU (the HPA's base)")
        report("replicas" not in dep["spec"], "the Deployment leaves replicas to the HPA")

    # The Service: LoadBalancer, Local, the two public ports, not the admin one.
    svc = one(objects, "Service")
    if report(svc is not None, "a Service"):
        s = svc["spec"]
        report(s.get("type") == "LoadBalancer", "Service type LoadBalancer")
        report(s.get("externalTrafficPolicy") == "Local", "externalTrafficPolicy: Local")
        report(s.get("selector", {}).items() <= labels.items(), "the Service selects the pods")
        targets = {p.get("targetPort") for p in s.get("ports", [])}
        resolved = {ports.get(t, t) for t in targets}
        report(
            resolved == {ports.get("https"), ports.get("http")},
            "the Service forwards to https and http only (not admin)",
            str(targets),
        )
        report({p["port"] for p in s["ports"]} == {443, 80}, "the Service publishes 443 and 80")
        report(
            config["listen"].get("https_public_port") == 443,
            "listen.https_public_port = 443 (the Service's port)",
        )

    # NetworkPolicy: the pods selected, 8443/8080 open, the admin port in no rule.
    np = one(objects, "NetworkPolicy")
    if report(np is not None, "a NetworkPolicy"):
        n = np["spec"]
        report(n["podSelector"].get("matchLabels", {}).items() <= labels.items(), "the NetworkPolicy selects the pods")
        report("Ingress" in n.get("policyTypes", []), "it restricts ingress")
        allowed = set()
        for rule in n.get("ingress", []):
            if not rule.get("ports"):
                allowed.add("every port")
            for p in rule.get("ports", []):
                allowed.add(ports.get(p.get("port"), p.get("port")))
        report(
            admin_port not in allowed and "admin" not in allowed and "every port" not in allowed,
            "the admin port is in no ingress rule",
            str(sorted(map(str, allowed))),
        )
        report({ports["https"], ports["http"]} <= allowed, "https and http are open")

    # PodDisruptionBudget: one at a time, for these pods.
    pdb = one(objects, "PodDisruptionBudget")
    if report(pdb is not None, "a PodDisruptionBudget"):
        report(pdb["spec"].get("maxUnavailable") == 1, "maxUnavailable: 1")
        report(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the PDB selects the pods")

    # Where the certificates come from.
    tls = config.get("tls", {})
    if variant == "overlays/secret-certificate":
        cert, key = tls.get("cert", ""), tls.get("key", "")
        directory = str(Path(cert).parent)
        m = mounts.get(directory)
        vol = volumes.get(m["name"], {}) if m else {}
        report(
            m is not None and "secret" in vol and "subPath" not in m and Path(key).parent == Path(cert).parent,
            "tls.cert and tls.key are in a Secret mounted as a directory (no subPath: the ..data swap is seen)",
            f"{cert}, {key}, {m}",
        )
        crt = one(objects, "Certificate")
        report(
            crt is not None and vol.get("secret", {}).get("secretName") == crt["spec"]["secretName"],
            "the Certificate writes the Secret the pods mount",
        )
        report(
            crt is not None and Path(cert).name == "tls.crt" and Path(key).name == "tls.key",
            "tls.cert/tls.key are the kubernetes.io/tls keys cert-manager writes",
        )
    if variant == "overlays/acme":
        acme = config.get("acme", {})
        storage = acme.get("storage", "")
        m = mounts.get(storage)
        vol = volumes.get(m["name"], {}) if m else {}
        claim = vol.get("persistentVolumeClaim", {}).get("claimName")
        pvc = next(
            (o for o in objects if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == claim), None
        )
        report(bool(acme.get("names")), "[acme] names are set")
        report(
            pvc is not None and not m.get("readOnly"),
            "acme.storage is a writable PersistentVolumeClaim mount",
            f"{storage}, {m}",
        )
        report(pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteMany"], "the claim is ReadWriteMany")


def same_common_settings(configs: dict[str, dict]) -> None:
    """Outside [tls] and [acme], the three tlsfront.toml files agree."""
    common = {v: {k: t for k, t in c.items() if k not in ("tls", "acme")} for v, c in configs.items()}
    first = next(iter(common.values()))
    for variant, c in common.items():
        check(c == first, f"{variant}: tlsfront.toml outside [tls]/[acme] is the base's", f"{c} != {first}")


def tlsfront_binary() -> str | None:
    if os.environ.get("TLSFRONT_BIN"):
        return os.environ["TLSFRONT_BIN"]
    best = None
    for candidate in (ROOT / "target/release/tlsfront", ROOT / "target/debug/tlsfront"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            if best is None or candidate.stat().st_mtime > best.stat().st_mtime:
                best = candidate
    return str(best) if best else None


def tlsfront_check(binary: str, variant: str, text: str) -> None:
    """`tlsfront check` on the ConfigMap's file, its in-cluster paths moved
    into a temporary directory (a development certificate stands in for the
    Secret)."""
    with tempfile.TemporaryDirectory(prefix="tlsfront-k8s-") as tmp:
        t = Path(tmp)
        out = subprocess.run(
            [binary, "cert", "--out", str(t / "dev")], capture_output=True, text=True, timeout=60
        )
        if not check(out.returncode == 0, f"{variant}: tlsfront cert (a stand-in certificate)", out.stderr.strip()):
            return
        (t / "tls").mkdir()
        shutil.copy(t / "dev/cert.pem", t / "tls/tls.crt")
        shutil.copy(t / "dev/key.pem", t / "tls/tls.key")
        moved = (
            text.replace("/etc/tlsfront/tls/", f"{t}/tls/")
            .replace("/etc/tlsfront/certs", f"{t}/certs")
            .replace("/var/lib/tlsfront/acme", f"{t}/acme")
        )
        config = t / "tlsfront.toml"
        config.write_text(moved, encoding="utf-8")
        out = subprocess.run([binary, "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
        first = (out.stdout.strip().splitlines() or [""])[0]
        check(
            out.returncode == 0,
            f"{variant}: tlsfront check on its tlsfront.toml ({first or 'no output'})",
            (out.stderr or out.stdout).strip(),
        )


def readme_links() -> None:
    """Relative links in deploy/kubernetes/README.md lead to a file, and an
    anchor to a heading of it (tests/e2e/test_docs.py covers the top-level
    folders' READMEs only)."""

    def anchor(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, frag = target.partition("#")
        dest = (readme.parent / path).resolve() if path else readme
        if not dest.exists():
            broken.append(f"{target}: no file")
        elif frag and dest.is_file():
            headings = re.findall(r"^#+\s+(.*)$", dest.read_text(encoding="utf-8"), re.M)
            if frag not in {anchor(h) for h in headings}:
                broken.append(f"{target}: no heading #{frag}")
    check(not broken, "deploy/kubernetes/README.md: relative links resolve", "; ".join(broken))


# ------------------------------------------------------------------ negative controls


def negative_controls(rendered: dict[str, list[dict]]) -> None:
    """Broken copies must be refused: the checks above can fail."""

    def refused_by_project(variant: str, objects: list[dict]) -> bool:
        failed: list[str] = []
        project_checks(variant, objects, report=lambda ok, what, detail="": ok or failed.append(what) or False)
        return bool(failed)

    base = rendered["base"]

    def mutated(objects, kind, change):
        objects = copy.deepcopy(objects)
        change(next(o for o in objects if o["kind"] == kind))
        return objects

    dep_typo = mutated(base, "Deployment", lambda d: pod_spec(d)["containers"][0].update(readinessProb={}))
    check(
        bool(schema_errors(next(o for o in dep_typo if o["kind"] == "Deployment"))),
        "control: a misspelt field (readinessProb) is refused by kubernetes-validate",
    )
    wrong_type = mutated(base, "Service", lambda s: s["spec"].update(externalTrafficPolicy=1))
    check(
        bool(schema_errors(next(o for o in wrong_type if o["kind"] == "Service"))),
        "control: a wrongly typed value is refused by kubernetes-validate",
    )
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x"}}
    check(bool(schema_errors(unknown_kind)), "control: a kind without a schema is an error, not a warning")
    if "overlays/secret-certificate" in rendered:
        cert = copy.deepcopy(one(rendered["overlays/secret-certificate"], "Certificate"))
        cert["spec"]["secretNme"] = cert["spec"].pop("secretName")
        check(bool(schema_errors(cert)), "control: a misspelt Certificate field is refused")
    short_grace = mutated(base, "Deployment", lambda d: pod_spec(d).update(terminationGracePeriodSeconds=30))
    check(refused_by_project("base", short_grace), "control: terminationGracePeriodSeconds 30 is refused")
    admin_open = mutated(
        base, "NetworkPolicy", lambda n: n["spec"]["ingress"][0]["ports"].append({"port": 9901, "protocol": "TCP"})
    )
    check(refused_by_project("base", admin_open), "control: the admin port opened in the NetworkPolicy is refused")
    slow_ready = mutated(base, "Deployment", lambda d: pod_spec(d)["containers"][0]["readinessProbe"].update(failureThreshold=10))
    check(refused_by_project("base", slow_ready), "control: a readiness probe slower than shutdown_delay is refused")


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=shutil.which("kubectl"), help="kubectl to render with (default: PATH)")
    args = parser.parse_args()
    started = time.monotonic()

    kubectl = args.kubectl
    kversion = kustomize_version(kubectl) if kubectl else None
    if kubectl and kversion and kversion >= (4, 0, 0):
        print(f"rendering with {kubectl} kustomize (kustomize v{'.'.join(map(str, kversion))}) and the built-in renderer")
    else:
        found = f"v{'.'.join(map(str, kversion))}" if kversion else "no version printed"
        why = "no kubectl" if not kubectl else f"{kubectl} has no kustomize v4 or newer ({found})"
        print(f"rendering with the built-in renderer only ({why}): kubectl kustomize not checked")
        kubectl = None
    print(
        f"kubernetes-validate {KV_VERSION}, strict, against Kubernetes {', '.join(KUBERNETES_VERSIONS)}; "
        "cert-manager Certificate against validate.py's CERTIFICATE_SCHEMA"
    )

    rendered: dict[str, list[dict]] = {}
    configs: dict[str, dict] = {}
    binary = tlsfront_binary()
    global section
    for variant in VARIANTS:
        print(f"== {variant}")
        section = variant
        directory = HERE / variant
        try:
            builtin = render_builtin(directory)
        except (ValueError, OSError, KeyError, yaml.YAMLError) as e:
            check(False, f"{variant}: rendered by the built-in renderer", str(e))
            continue
        objects = builtin
        if kubectl:
            try:
                objects = render_kubectl(kubectl, directory)
            except (RuntimeError, subprocess.TimeoutExpired, yaml.YAMLError) as e:
                check(False, f"{variant}: kubectl kustomize", str(e))
                continue
            check(
                normalised(objects) == normalised(builtin),
                f"{variant}: kubectl kustomize and the built-in renderer agree",
                "run both and diff them",
            )
        rendered[variant] = objects
        kinds = ", ".join(sorted(f"{o['kind']}" for o in objects))
        print(f"  {len(objects)} objects: {kinds}")
        for o in objects:
            errors = schema_errors(o)
            check(not errors, f"{o['kind']}/{o['metadata']['name']}: schema", "; ".join(errors))
        try:
            project_checks(variant, objects)
            dep = one(objects, "Deployment")
            config, text = tlsfront_config(objects, dep)
            configs[variant] = config
        except (KeyError, StopIteration, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
            check(False, f"{variant}: the project checks could read the manifests", f"{type(e).__name__}: {e}")
            continue
        if binary:
            tlsfront_check(binary, variant, text)
    if not binary:
        print("== tlsfront check: skipped (no built binary; set TLSFRONT_BIN or build first)")

    section = ""
    print("== across the variants")
    if len(configs) == len(VARIANTS):
        same_common_settings(configs)
    readme_links()
    print("== negative controls (broken copies must be refused)")
    if "base" in rendered:
        negative_controls(rendered)
    else:
        check(False, "negative controls", "the base did not render")

    took = time.monotonic() - started
    if failures:
        print(f"kubernetes manifests: {len(failures)} failed ({took:.1f} s): {'; '.join(failures)}")
        return 1
    print(f"kubernetes manifests: all checks passed ({took:.1f} s; validated, not run: no cluster here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
