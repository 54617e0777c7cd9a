"""The image built from docker/Dockerfile keeps its promises: non-root,
a working binary, the shipped config valid, small, no build tools."""

from __future__ import annotations

import json
import re
import tomllib

from conftest import IMAGE, REPO_ROOT, docker

# What the project may add on top of its runtime base image (the binary, its
# config, a user, the CA bundle). The release binary is 49 MB, 40 MB of it the
# line tables that Cargo.toml's release profile keeps (debug =
# "line-tables-only") for file:line in backtraces; stripped it would be 9 MB.
# A toolchain or a second distribution copied in by mistake is hundreds of MB.
MAX_ADDED_MB = 60


def image_info(name: str) -> dict:
    return json.loads(docker("image", "inspect", name).stdout)[0]


def runtime_base() -> str:
    """The FROM of docker/Dockerfile's last stage."""
    froms = [line.split()[1] for line in (REPO_ROOT / "docker" / "Dockerfile").read_text().splitlines()
             if line.upper().startswith("FROM ")]
    return froms[-1]


def test_runs_as_uid_10001():
    assert image_info(IMAGE)["Config"]["User"] == "10001:10001"
    ids = docker("run", "--rm", "--entrypoint", "id", IMAGE).stdout.strip()
    assert re.match(r"uid=10001\S* gid=10001\S*", ids), ids


def test_version_matches_the_crate():
    version = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["package"]["version"]
    out = docker("run", "--rm", IMAGE, "--version").stdout.strip()
    assert out == f"tlsfront {version}"


def test_check_passes_on_the_shipped_config_and_fails_on_a_missing_one():
    ok = docker("run", "--rm", IMAGE, "check")
    assert "/etc/tlsfront/tlsfront.toml" in ok.stdout + ok.stderr
    # The same command can fail: exit 2 and the error line, no panic.
    bad = docker("run", "--rm", "-e", "TLSFRONT_CONFIG=/etc/tlsfront/none.toml", IMAGE, "check", check=False)
    assert bad.returncode == 2, (bad.returncode, bad.stderr)
    assert bad.stderr.strip() == (
        "tlsfront: error: invalid configuration in /etc/tlsfront/none.toml: "
        "cannot read the file: No such file or directory (os error 2)"
    )


def test_no_compiler_or_toolchain_in_the_final_image():
    probe = (
        "for c in cc gcc cc1 c++ ld as rustc cargo rustup make; do command -v \"$c\"; done; "
        "ls -d /usr/local/cargo /usr/local/rustup /usr/lib/gcc 2>/dev/null; true"
    )
    found = docker("run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", probe).stdout.split()
    assert found == [], f"build tools in the runtime image: {found}"


def test_size_added_on_the_base_image_is_bounded():
    image, base = image_info(IMAGE), image_info(runtime_base())
    # The runtime stage really is built on that base: its layers come first.
    base_layers = base["RootFS"]["Layers"]
    assert image["RootFS"]["Layers"][: len(base_layers)] == base_layers
    added_mb = (image["Size"] - base["Size"]) / 1e6
    stand_in = (base["Config"].get("Labels") or {}).get("org.tlsfront.stand-in") == "true"
    print(
        f"\nimage {IMAGE}: {image['Size'] / 1e6:.1f} MB = {runtime_base()} "
        f"{'(local stand-in) ' if stand_in else ''}{base['Size'] / 1e6:.1f} MB + {added_mb:.1f} MB added"
    )
    assert added_mb <= MAX_ADDED_MB, f"the image adds {added_mb:.1f} MB to its base (bound {MAX_ADDED_MB} MB)"


def test_system_roots_are_in_the_image_for_https_servers_and_acme():
    # An https:// route server without `ca`, and ACME's HTTPS to the CA, are
    # verified against the system roots: the image must carry a bundle, or
    # tlsfront warns at start that it has none (as the image once did).
    config = '[listen]\nhttps = "127.0.0.1:8443"\n[[route]]\nurl = "https://127.0.0.1:9"\n'
    script = (
        f"printf '{config}' > /tmp/t.toml && "
        "timeout -s TERM 3 tlsfront run -c /tmp/t.toml; "
        "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"
    )
    out = docker("run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", script, check=False)
    logs = out.stdout + out.stderr
    assert "listening" in logs, logs
    assert "no system CA certificates" not in logs, logs
    assert int(out.stdout.strip().splitlines()[-1]) >= 100, logs
