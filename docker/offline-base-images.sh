#!/usr/bin/env bash
# Test aid, for machines where no container registry can be reached: makes
# every base image that the project's Dockerfiles name (FROM lines of
# docker/Dockerfile and docker/demo-app/Dockerfile) available to the engine.
# An image that is already there, or that `docker pull` gets, is left alone.
# Only for the others a local stand-in is built under the same name, from
# Debian packages:
#
#   debian:bookworm-slim      a `debootstrap --variant=minbase bookworm` root,
#                             `docker import`ed (made once per run)
#   rust:<v>-slim-bookworm    that + gcc, libc6-dev, ca-certificates and this
#                             machine's own Rust toolchain (`rustc --print
#                             sysroot`, copied in, nothing downloaded)
#   python:3.N-slim-bookworm  that + Debian's python3 (3.N must be Debian's),
#                             pip and venv, in a venv first on PATH
#
# Stand-ins carry this machine's extra CA certificates
# (/usr/local/share/ca-certificates, which update-ca-certificates added to
# /etc/ssl/certs), so that pip and cargo in a build reach PyPI and crates.io
# through the same TLS-inspecting proxy the host uses. They are labelled
# org.tlsfront.stand-in=true. The Dockerfiles are not changed: with the real
# images at hand, this script does nothing.
#
# Environment: DEBIAN_MIRROR (default: the first Debian URI in
# /etc/apt/sources.list*, else http://deb.debian.org/debian),
# DEBOOTSTRAP_DIR_PARENT (where the debootstrap root goes; default a new
# temporary directory, removed at the end), PULL_TIMEOUT (s, default 120).
set -euo pipefail
cd "$(dirname "$0")/.."

STAND_IN_LABEL="org.tlsfront.stand-in=true"
pull_timeout="${PULL_TIMEOUT:-120}"
parent="${DEBOOTSTRAP_DIR_PARENT:-}"
own_parent=""
if [ -z "$parent" ]; then
  parent="$(mktemp -d /tmp/tlsfront-baseimages.XXXXXX)"
  own_parent="$parent"
fi
# unmount_below DIR: whatever debootstrap left mounted there (proc, sys),
# so that removing DIR never reaches into a mounted file system.
unmount_below() {
  local m
  for m in $(findmnt -n -l -o TARGET | grep -F "$1/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  [ -n "$rootfs" ] && unmount_below "$rootfs"
  [ -z "$own_parent" ] || rm -rf --one-file-system "$own_parent"
}
rootfs=""
trap cleanup EXIT

# The images named in FROM lines, without the project's own stage names.
base_images() {
  awk 'toupper($1) == "FROM" {
         for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; break }
       }' docker/Dockerfile docker/demo-app/Dockerfile |
    grep -v -x -F -f <(awk 'toupper($1) == "FROM" && toupper($(NF-1)) == "AS" { print $NF }' \
      docker/Dockerfile docker/demo-app/Dockerfile) |
    sort -u
}

# The URI of this machine's Debian mirror, as apt uses it (deb822 or one-line).
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  apt_uri debian
}

# apt_uri debian|debian-security: the first such URI in /etc/apt/sources.list*.
apt_uri() {
  local uri
  uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^\s*#' |
    grep -o -E "https?://[^ ]+/$1/?( |\$)" | head -n 1 | tr -d ' ')" || true
  uri="${uri%/}"
  echo "${uri:-http://deb.debian.org/$1}"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# build_image NAME CONTEXT < Dockerfile: the classic builder, its log shown
# only on failure.
build_image() {
  local log="$parent/build-${1//[^a-z0-9.]/_}.log"
  if ! DOCKER_BUILDKIT=0 docker build -t "$1" -f - "$2" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    return 1
  fi
}

# --- debian:bookworm-slim ------------------------------------------------------
debootstrap_root() {
  [ -z "$rootfs" ] || return 0
  command -v debootstrap >/dev/null || {
    echo "debootstrap is needed: apt-get install debootstrap" >&2
    return 1
  }
  local mirror
  mirror="$(debian_mirror)"
  rootfs="$parent/bookworm-minbase"
  echo "debootstrap --variant=minbase bookworm from $mirror (once per run)"
  local started=$SECONDS
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$parent/debootstrap.log" 2>&1; then
    tail -n 40 "$parent/debootstrap.log"
    [ ! -f "$rootfs/debootstrap/debootstrap.log" ] || tail -n 40 "$rootfs/debootstrap/debootstrap.log"
    return 1
  fi
  # As in Debian's own slim images: no documentation or translations from
  # later installs, and the package lists and caches are not part of the image.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  local security
  security="$(apt_uri debian-security)"
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # This machine's extra CA certificates: trusted in images that install
  # ca-certificates (its update-ca-certificates picks them up from here).
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp -a /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/* "$rootfs"/usr/share/doc/*/changelog* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  echo "debootstrap took $((SECONDS - started)) s"
}

stand_in_debian() {
  local name="$1"
  debootstrap_root
  unmount_below "$rootfs"
  tar -C "$rootfs" --numeric-owner --one-file-system -c . |
    docker import --change 'CMD ["bash"]' --change "LABEL $STAND_IN_LABEL" - "$name" >/dev/null
}

# --- rust:<v>-slim-bookworm ------------------------------------------------------
stand_in_rust() {
  local name="$1" ctx sysroot toolchain version
  ensure debian:bookworm-slim
  sysroot="$(rustc --print sysroot)"
  version="$(rustc --version | awk '{print $2}')"
  toolchain="$(basename "$sysroot")"
  echo "rust stand-in: Debian gcc + this machine's toolchain $version ($sysroot)"
  ctx="$parent/rust-context"
  rm -rf "$ctx"
  mkdir -p "$ctx/toolchain/bin" "$ctx/ca"
  # Hard links where possible: nothing is copied twice on disk. The
  # documentation (share/) and rust-src are not needed to build.
  for b in cargo rustc rustdoc; do
    ln "$sysroot/bin/$b" "$ctx/toolchain/bin/$b" 2>/dev/null || cp -a "$sysroot/bin/$b" "$ctx/toolchain/bin/$b"
  done
  for d in lib libexec etc; do
    [ -d "$sysroot/$d" ] || continue
    cp -al "$sysroot/$d" "$ctx/toolchain/$d" 2>/dev/null || cp -a "$sysroot/$d" "$ctx/toolchain/$d"
  done
  rm -rf "$ctx/toolchain/lib/rustlib/src" "$ctx/toolchain/lib/rustlib/rustc-src"
  build_image "$name" "$ctx" <<EOF
FROM debian:bookworm-slim
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$version
COPY toolchain /usr/local/rustup/toolchains/$toolchain
RUN mkdir -p /usr/local/cargo/bin \\
    && for b in cargo rustc rustdoc; do ln -s /usr/local/rustup/toolchains/$toolchain/bin/\$b /usr/local/cargo/bin/\$b; done \\
    && chmod -R a+w /usr/local/cargo \\
    && rustc --version && cargo --version
LABEL $STAND_IN_LABEL
EOF
}

# --- python:3.N-slim-bookworm --------------------------------------------------------
stand_in_python() {
  local name="$1" wanted
  wanted="$(sed -E 's/^python:([0-9]+\.[0-9]+).*/\1/' <<<"$name")"
  ensure debian:bookworm-slim
  echo "python stand-in: Debian's python3 (must be $wanted)"
  mkdir -p "$parent/empty"
  build_image "$name" "$parent/empty" <<EOF
FROM debian:bookworm-slim
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \\
    && rm -rf /var/lib/apt/lists/* \\
    && python3 -c 'import sys; v = "%d.%d" % sys.version_info[:2]; sys.exit(0 if v == "$wanted" else "Debian has python " + v + ", not $wanted")' \\
    && python3 -m venv /usr/local/python \\
    && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > /etc/pip.conf
# python, pip and what pip installs (gunicorn) come first on PATH, as in the
# official image's /usr/local/bin.
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
LABEL $STAND_IN_LABEL
EOF
}

# ensure IMAGE: there already, pulled, or a stand-in built.
ensure() {
  local image="$1"
  if have_image "$image"; then
    echo "$image: present"
    return
  fi
  if timeout "$pull_timeout" docker pull -q "$image" >/dev/null 2>"$parent/pull.err"; then
    echo "$image: pulled"
    return
  fi
  echo "$image: cannot be pulled ($(tail -n 1 "$parent/pull.err")); building a local stand-in"
  local started=$SECONDS
  case "$image" in
    debian:bookworm-slim) stand_in_debian "$image" ;;
    rust:*-slim-bookworm) stand_in_rust "$image" ;;
    python:3.*-slim-bookworm) stand_in_python "$image" ;;
    *)
      echo "no stand-in recipe for $image" >&2
      return 1
      ;;
  esac
  echo "$image: stand-in built in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

for image in $(base_images); do
  ensure "$image"
done
