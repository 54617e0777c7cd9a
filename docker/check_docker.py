"""Project-specific checks of the container setup, run by docker/lint.sh.

hadolint knows Dockerfile good practice and the Compose schema knows the
file format; neither knows what this image promises. This checks that
promise without a Docker engine:

- docker/Dockerfile: multi-stage, `cargo build --release --locked`, a slim
  runtime stage, the binary at /usr/local/bin/tlsfront, a non-root USER,
  EXPOSE 8443 8443/udp 8080, STOPSIGNAL SIGTERM, HEALTHCHECK ["tlsfront", "health"]
  (exec form, no curl), the config and TLSFRONT_CONFIG, the certificate
  VOLUME created and chowned before it is declared, ENTRYPOINT/CMD; every
  COPY source exists and is not excluded by .dockerignore.
- docker/demo-app/Dockerfile: slim Python, non-root, pinned requirements,
  binds 0.0.0.0:8000.
- docker/compose.yaml: ports, volumes, read-only config, the app not
  published, stop_grace_period above limits.shutdown_timeout.
- docker/tlsfront.toml: only keys that config/tlsfront.toml documents, and
  consistent with the Dockerfile and compose file (ports, certificate
  directory, upstream service, loopback admin endpoint).

Usage: check_docker.py [--dockerfile FILE] [--compose FILE] (defaults: the
files in docker/). Prints one line per check; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from dockerfile_parse import DockerfileParser
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]

BINARY = "/usr/local/bin/tlsfront"
CONFIG_PATH = "/etc/tlsfront/tlsfront.toml"
CERTS_DIR = "/etc/tlsfront/certs"

failures: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> bool:
    if ok:
        print(f"  ok    {what}")
    else:
        print(f"  FAIL  {what}" + (f": {detail}" if detail else ""))
        failures.append(what)
    return ok


# ---------------------------------------------------------------- Dockerfile


def instructions(path: Path) -> list[dict]:
    parser = DockerfileParser(path=str(path), cache_content=True)
    return parser.structure


def stages(instrs: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = []
    for ins in instrs:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def exec_form(value: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, else None."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
        return parsed
    return None


def strip_flags(value: str) -> tuple[list[str], list[str]]:
    """Splits `--flag=x --flag2 a b` into (flags, rest) for COPY/HEALTHCHECK."""
    words = value.split()
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    return flags, words


def dockerignore_patterns() -> list[tuple[bool, str]]:
    path = ROOT / ".dockerignore"
    if not path.is_file():
        return []
    pats = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line[1:] if negate else line
        pats.append((negate, pat.strip("/")))
    return pats


def ignored(rel: str, pats: list[tuple[bool, str]]) -> bool:
    """Approximates Docker's .dockerignore matching (last match wins; a match
    on a parent directory excludes everything below it)."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pat in pats:
        alts = {pat}
        if pat.startswith("**/"):
            alts.add(pat[3:])
        if any(fnmatch.fnmatchcase(p, a) for p in prefixes for a in alts):
            result = not negate
    return result


def check_main_dockerfile(path: Path) -> dict:
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:")
    all_instrs = instructions(path)
    st = stages(all_instrs)
    facts: dict = {}
    if not check(len(st) >= 2, "multi-stage build", f"{len(st)} stage(s)"):
        return facts
    build, final = st[0], st[-1]
    build_from = build[0]["value"].split()
    check(build_from[0].startswith("rust:"), "build stage FROM an official rust image", build_from[0])
    check(
        len(build_from) >= 3 and build_from[1].upper() == "AS",
        "build stage is named (FROM ... AS name)",
    )
    runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    check(
        "cargo build --release --locked" in runs,
        "build stage runs `cargo build --release --locked`",
    )

    final_from = final[0]["value"].split()[0]
    check(
        "slim" in final_from or "distroless" in final_from,
        "runtime stage FROM a slim or distroless image",
        final_from,
    )

    def last(name: str) -> dict | None:
        found = [i for i in final if i["instruction"] == name]
        return found[-1] if found else None

    user = last("USER")
    user_name = user["value"].split(":")[0] if user else ""
    check(
        user is not None and user_name not in ("root", "0", ""),
        "runtime stage runs as a non-root USER",
        user["value"] if user else "no USER",
    )
    facts["user"] = user["value"] if user else None

    expose = last("EXPOSE")
    ports = set(expose["value"].replace("/tcp", "").split()) if expose else set()
    check({"8443", "8443/udp", "8080"} <= ports, "EXPOSE 8443 8443/udp 8080", " ".join(sorted(ports)))
    facts["expose"] = ports

    stop = last("STOPSIGNAL")
    check(stop is not None and stop["value"].strip() == "SIGTERM", "STOPSIGNAL SIGTERM")

    hc = last("HEALTHCHECK")
    hc_cmd = None
    if hc:
        _, rest = strip_flags(hc["value"])
        if rest and rest[0].upper() == "CMD":
            hc_cmd = exec_form(hc["value"].split("CMD", 1)[1].strip())
    check(
        hc_cmd is not None and hc_cmd[:2] == ["tlsfront", "health"],
        'HEALTHCHECK CMD ["tlsfront", "health"] (exec form)',
        hc["value"] if hc else "no HEALTHCHECK",
    )
    check(
        hc is None or not re.search(r"\b(curl|wget)\b", hc["value"]),
        "HEALTHCHECK needs no curl/wget",
    )

    entry = last("ENTRYPOINT")
    cmd = last("CMD")
    check(
        entry is not None and exec_form(entry["value"]) == ["tlsfront"],
        'ENTRYPOINT ["tlsfront"]',
        entry["value"] if entry else "none",
    )
    check(
        cmd is not None and exec_form(cmd["value"]) == ["run"],
        'CMD ["run"]',
        cmd["value"] if cmd else "none",
    )

    copies = [i for i in final if i["instruction"] == "COPY"]
    binary_copied = False
    config_copied = False
    for c in copies:
        flags, rest = strip_flags(c["value"])
        if any(f.startswith("--from=") for f in flags) and rest and rest[-1] == BINARY:
            binary_copied = True
        if not any(f.startswith("--from=") for f in flags) and rest and rest[-1] == CONFIG_PATH:
            config_copied = True
            facts["config_src"] = rest[0]
    check(binary_copied, f"binary copied from the build stage to {BINARY}")
    check(config_copied, f"config copied to {CONFIG_PATH}")

    envs = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    check(
        re.search(rf"TLSFRONT_CONFIG[= ]\"?{re.escape(CONFIG_PATH)}\b", envs) is not None,
        f"ENV TLSFRONT_CONFIG={CONFIG_PATH}",
    )
    check(last("WORKDIR") is not None, "runtime stage sets a WORKDIR")
    facts["workdir"] = last("WORKDIR")["value"] if last("WORKDIR") else None

    vol_idx = None
    for idx, i in enumerate(final):
        if i["instruction"] == "VOLUME":
            vals = exec_form(i["value"]) or i["value"].split()
            if CERTS_DIR in vals:
                vol_idx = idx
    check(vol_idx is not None, f"VOLUME {CERTS_DIR}")
    if vol_idx is not None:
        before = " ".join(i["value"] for i in final[:vol_idx] if i["instruction"] == "RUN")
        check(
            CERTS_DIR in before and "chown" in before,
            f"{CERTS_DIR} created and chowned before VOLUME (a new volume copies owner and mode)",
        )
        after = [i for i in final[vol_idx + 1 :] if i["instruction"] in ("RUN", "COPY", "ADD")]
        check(
            not any(CERTS_DIR in i["value"] for i in after),
            f"nothing written to {CERTS_DIR} after VOLUME (it would be discarded)",
        )

    check(
        not any(i["instruction"] == "ADD" and "://" in i["value"] for i in all_instrs),
        "no ADD of remote URLs",
    )

    # Every COPY from the build context exists and survives .dockerignore.
    pats = dockerignore_patterns()
    for name in ("target", ".venv", ".git", "certs/ca-key.pem"):
        check(ignored(name, pats), f".dockerignore excludes {name}")
    for i in all_instrs:
        if i["instruction"] != "COPY":
            continue
        flags, rest = strip_flags(i["value"])
        if any(f.startswith("--from=") for f in flags):
            continue
        for src in rest[:-1]:
            src = src.rstrip("/")
            check(
                (ROOT / src).exists() and not ignored(src, pats),
                f"COPY source {src} is in the build context",
                "missing" if not (ROOT / src).exists() else "excluded by .dockerignore",
            )
    check_build_inputs(all_instrs, pats)
    return facts


def check_build_inputs(all_instrs: list[dict], pats: list[tuple[bool, str]]) -> None:
    """The build copies only Cargo.toml, Cargo.lock and src/ (and builds a stub
    of src/main.rs + src/lib.rs first): whatever else the crate needs to
    compile must be copied too, or the image build breaks."""
    copied: list[str] = []
    for i in all_instrs:
        if i["instruction"] == "COPY":
            flags, rest = strip_flags(i["value"])
            if not any(f.startswith("--from=") for f in flags):
                copied += [s.rstrip("/") for s in rest[:-1]]

    def is_copied(rel: str) -> bool:
        return any(rel == c or rel.startswith(c + "/") for c in copied) and not ignored(rel, pats)

    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    targets = []
    for kind in ("lib", "bin", "bench", "example", "test"):
        entries = manifest.get(kind, [])
        for entry in [entries] if isinstance(entries, dict) else entries:
            if "path" in entry:
                targets.append((kind, entry["path"]))
    build_rs = manifest.get("package", {}).get("build")
    if build_rs is None and (ROOT / "build.rs").exists():
        build_rs = "build.rs"
    if isinstance(build_rs, str):
        targets.append(("build script", build_rs))
    missing = [f"{k} {p}" for k, p in targets if not is_copied(p)]
    check(not missing, "every target and build script in Cargo.toml is copied into the build", ", ".join(missing))
    stubbed = {"src/main.rs", "src/lib.rs"}
    extra = [f"{k} {p}" for k, p in targets if k in ("lib", "bin") and p not in stubbed]
    check(
        not extra,
        "the dependency-cache stub (src/main.rs, src/lib.rs) covers every lib/bin target",
        ", ".join(extra),
    )
    check(
        "workspace" not in manifest or not manifest["workspace"].get("members"),
        "no workspace members the build would need",
    )

    # include_str!/include_bytes! outside test code must be in the context.
    outside = []
    for rs in sorted((ROOT / "src").rglob("*.rs")):
        text = rs.read_text(errors="replace")
        test_start = re.search(r"#\[cfg\(test\)\]\s*mod \w+", text)
        for m in re.finditer(r"include_(?:str|bytes)!\(\s*\"([^\"]+)\"", text):
            if test_start and m.start() > test_start.start():
                continue
            target = (rs.parent / m.group(1)).resolve()
            try:
                rel = target.relative_to(ROOT).as_posix()
            except ValueError:
                rel = str(target)
            if not is_copied(rel):
                outside.append(f"{rs.relative_to(ROOT)}: {m.group(1)}")
    check(not outside, "files include_str!/include_bytes! by non-test code are copied", "; ".join(outside))


def check_app_dockerfile(path: Path) -> None:
    print(f"{path.relative_to(ROOT)}:")
    st = stages(instructions(path))
    final = st[-1]
    image = final[0]["value"].split()[0]
    check(image.startswith("python:") and "slim" in image, "FROM a slim Python image", image)
    users = [i for i in final if i["instruction"] == "USER"]
    check(
        bool(users) and users[-1]["value"].split(":")[0] not in ("root", "0"),
        "runs as a non-root USER",
    )
    cmd = [i for i in final if i["instruction"] in ("CMD", "ENTRYPOINT")]
    argv = exec_form(cmd[-1]["value"]) if cmd else None
    check(argv is not None, "CMD in exec form (the server is PID 1 and gets SIGTERM)")
    check(argv is not None and "0.0.0.0:8000" in argv, "the app server binds 0.0.0.0:8000")
    reqs = path.parent / "requirements.txt"
    lines = [
        l.split("#")[0].strip()
        for l in reqs.read_text().splitlines()
        if l.split("#")[0].strip()
    ]
    unpinned = [l for l in lines if "==" not in l and not l.startswith("-")]
    check(not unpinned, "demo-app requirements are pinned (==)", ", ".join(unpinned))
    if argv and argv[0] == "gunicorn":
        check(
            any(l.lower().startswith("gunicorn==") for l in lines),
            "gunicorn is pinned in the demo-app requirements",
        )


# ------------------------------------------------------------------- compose


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text)):
        total += float(num) * units[unit]
    return total


def with_defaults(text: str) -> str:
    """Compose interpolation with every variable unset: `${VAR:-x}` -> x."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)


def check_compose(path: Path, config: dict) -> None:
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:")
    doc = YAML(typ="safe").load(path.read_text())
    services = doc.get("services") or {}
    check({"tlsfront", "app"} <= set(services), "services tlsfront and app")
    tf = services.get("tlsfront") or {}
    app = services.get("app") or {}

    build = tf.get("build") or {}
    check(
        isinstance(build, dict)
        and build.get("context") == ".."
        and build.get("dockerfile") == "docker/Dockerfile",
        "tlsfront builds docker/Dockerfile with the repository root as context",
    )
    # "${TLSFRONT_HTTPS_PORT:-8443}:8443" publishes 8443:8443 unless the
    # variable is set (docker/test.sh remaps to free loopback ports).
    ports = [with_defaults(str(p)) for p in tf.get("ports") or []]
    check("8443:8443" in ports, 'tlsfront publishes "8443:8443" by default', ", ".join(ports))
    check("8443:8443/udp" in ports, 'tlsfront publishes "8443:8443/udp" (HTTP/3) by default', ", ".join(ports))
    check("8080:8080" in ports, 'tlsfront publishes "8080:8080" by default', ", ".join(ports))
    vols = [str(v) for v in tf.get("volumes") or []]
    certs_vol = [v for v in vols if v.split(":")[1:2] == [CERTS_DIR]]
    named = certs_vol[0].split(":")[0] if certs_vol else ""
    check(
        bool(certs_vol) and named in (doc.get("volumes") or {}),
        f"a declared named volume at {CERTS_DIR}",
        ", ".join(vols),
    )
    check(
        any(v.startswith("./tlsfront.toml:" + CONFIG_PATH) and v.endswith(":ro") for v in vols),
        f"./tlsfront.toml mounted read-only at {CONFIG_PATH}",
    )
    deps = tf.get("depends_on") or {}
    check("app" in deps, "tlsfront depends_on app")
    grace = duration_seconds(tf.get("stop_grace_period", "10s"))
    shutdown = duration_seconds(
        ((config.get("limits") or {}).get("shutdown_timeout")) or "30s"
    )
    check(
        grace > shutdown,
        "tlsfront stop_grace_period > limits.shutdown_timeout",
        f"{grace}s vs {shutdown}s",
    )

    check("ports" not in app, "app publishes no ports (only reachable through tlsfront)")
    check("8000" in [str(p) for p in app.get("expose") or []], 'app expose: ["8000"]')
    env = app.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    check(
        str(env.get("SECRET_KEY", "")).startswith("${SECRET_KEY:-"),
        "app SECRET_KEY from the environment, with a default",
    )
    hc = (app.get("healthcheck") or {}).get("test") or []
    check("/healthz" in " ".join(map(str, hc)), "app healthcheck asks /healthz")

    upstream = urlsplit((config.get("upstream") or {}).get("url", ""))
    check(
        upstream.hostname in services and str(upstream.port) in [str(p) for p in app.get("expose") or []],
        "upstream.url names a compose service and its exposed port",
        (config.get("upstream") or {}).get("url", ""),
    )


# ------------------------------------------------------------------- config


def documented_keys() -> dict[str, set[str]]:
    """Tables and keys as documented (commented out) in config/tlsfront.toml."""
    keys: dict[str, set[str]] = {}
    table = None
    for line in (ROOT / "config" / "tlsfront.toml").read_text().splitlines():
        m = re.match(r"^\[(\w+)\]\s*$", line)
        if m:
            table = m.group(1)
            keys.setdefault(table, set())
            continue
        m = re.match(r"^#?\s?([a-z_]+) = ", line)
        if m and table:
            keys[table].add(m.group(1))
    return keys


def check_config(path: Path, facts: dict) -> dict:
    print(f"{path.relative_to(ROOT)}:")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        check(False, "valid TOML", str(exc))
        return {}
    check(True, "valid TOML")
    known = documented_keys()
    unknown = [
        f"{t}.{k}" if isinstance(v, dict) else t
        for t, v in config.items()
        for k in (v if isinstance(v, dict) else [None])
        if not isinstance(v, dict) or t not in known or k not in known[t]
    ]
    check(not unknown, "only keys documented in config/tlsfront.toml", ", ".join(unknown))

    listen = config.get("listen") or {}
    https_port = listen.get("https", "").rsplit(":", 1)[-1]
    http_port = listen.get("http", "").rsplit(":", 1)[-1]
    check(
        listen.get("https", "").startswith("0.0.0.0:"),
        "listen.https on every interface of the container",
    )
    if facts.get("expose"):
        check(
            {https_port, http_port} <= facts["expose"],
            "listen ports are the EXPOSEd ones",
            f"{https_port}, {http_port}",
        )
    tls = config.get("tls") or {}
    check(tls.get("self_signed_dir") == CERTS_DIR, f"tls.self_signed_dir = {CERTS_DIR} (the VOLUME)")
    check("tlsfront" in tls.get("self_signed_hosts", []), "dev certificate also valid for the service name")
    admin = (config.get("admin") or {}).get("listen", "")
    check(
        admin.startswith("127.0.0.1:") or admin.startswith("[::1]:"),
        "admin.listen set, on loopback (for `tlsfront health`; not published)",
        admin or "unset: `tlsfront health` needs it",
    )
    return config


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", type=Path, default=ROOT / "docker" / "Dockerfile")
    ap.add_argument("--app-dockerfile", type=Path, default=ROOT / "docker" / "demo-app" / "Dockerfile")
    ap.add_argument("--compose", type=Path, default=ROOT / "docker" / "compose.yaml")
    ap.add_argument("--config", type=Path, default=ROOT / "docker" / "tlsfront.toml")
    args = ap.parse_args()
    facts = check_main_dockerfile(args.dockerfile.resolve())
    check_app_dockerfile(args.app_dockerfile.resolve())
    config = check_config(args.config.resolve(), facts)
    check_compose(args.compose.resolve(), config)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
