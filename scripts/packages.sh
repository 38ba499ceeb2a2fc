# Debian packages locald needs, and an idempotent installer. Sourced by scripts/test
# and scripts/locald.

# What building locald needs besides Rust.
BUILD_PACKAGES=(
    libseccomp-dev  # libcontainer's seccomp support links libseccomp
    pkg-config      # finds libseccomp when building libcontainer
)

# What running containers from the built-in image uses.
RUN_PACKAGES=(
    busybox-static  # the built-in image's root filesystem (without it: host programs)
    passt           # pasta: outbound network of private containers (without it: loopback only)
    uidmap          # newuidmap/newgidmap: rootless containers see the user's subordinate ids
)

# What the tests run besides locald itself.
TEST_PACKAGES=(
    coreutils       # sh, sleep, seq, tr, cat, env in the process and end-to-end tests
    procps          # kill(1), used to send signals in the end-to-end tests
    tar             # packing test image layouts
    busybox-static  # the root filesystem of test images
    passt           # pasta, for the private network tests (tests/pasta.rs)
    docker-registry # a real registry on loopback for pull tests
    skopeo          # pushes test images into it
    umoci           # the reference unpacker the layer tests compare against
    openssl         # a test CA and server certificate for TLS tests
    apache2-utils   # htpasswd, for the basic-auth registry
    curl            # reaches published ports in the Docker API tests
    qemu-system-x86 # the QEMU guest that proves the macOS (Lima) path on Linux
    linux-image-cloud-amd64 # that guest's kernel and its virtio modules
    cpio            # packing the guest's initramfs (scripts/guest-initramfs)
    kmod            # modprobe --show-depends, for the guest's module order
    python3-venv    # a venv for docker-py and testcontainers (the Docker API tests)
    bsdutils        # script(1): a pseudo-terminal for `docker run -it`
    postgresql-15   # managed PostgreSQL services (tests/postgres.rs, locald psql)
    chromium        # the dashboard's browser test (locald-cli/tests/dashboard.rs)
    chromium-driver # chromedriver: WebDriver for that test
    uidmap          # newuidmap/newgidmap for the rootless tests (locald-cli/tests/rootless.rs)
    debootstrap     # the Debian image of the rootless tests, from the configured mirror
    libnss3-tools   # certutil: locald trust/untrust of browser profiles (locald-cli/tests/trust.rs)
    wrk             # scripts/bench-proxy
    nginx           # scripts/bench-proxy: the reverse proxy locald's is compared with
)

# The docker CLI the Docker API tests drive (locald-cli/tests/docker_cli.rs): only the
# client binary of Debian's docker.io, unpacked from the package into a directory of
# its own. Installing the package would pull containerd and could start dockerd; here
# locald is the daemon, and dockerd is never started.
DOCKER_CLIENT_PACKAGE=docker.io

# Puts the docker client in "$1" unless one is on PATH already.
install_docker_client() {
    local dir="$1"
    if command -v docker >/dev/null 2>&1 || [ -x "$dir/docker" ]; then
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "locald: not a Debian-like system; install a docker client (the CLI only) for the Docker API tests" >&2
        return
    fi
    echo "locald: unpacking the docker client of $DOCKER_CLIENT_PACKAGE into $dir" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && apt-get download -qq "$DOCKER_CLIENT_PACKAGE" 2>/dev/null)
    mkdir -p "$dir"
    dpkg-deb --fsys-tarfile "$tmp"/"$DOCKER_CLIENT_PACKAGE"_*.deb | tar -xO ./usr/bin/docker >"$dir/docker.tmp"
    chmod 755 "$dir/docker.tmp"
    mv "$dir/docker.tmp" "$dir/docker"
    rm -rf "$tmp"
}

install_packages() {
    local PACKAGES=("$@")
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "locald: not a Debian-like system; make sure these are installed: ${PACKAGES[*]}" >&2
        return
    fi
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    echo "locald: installing ${missing[*]}" >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# The normal user the rootless tests act as (locald-cli/tests/rootless.rs), with
# subordinate id ranges in /etc/subuid and /etc/subgid. Idempotent; needs root.
ensure_test_user() {
    local user="${1:-locald-test}"
    [ "$(id -u)" -eq 0 ] || return 0
    if ! id "$user" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/sh "$user"
    fi
    if ! grep -q "^$user:" /etc/subuid 2>/dev/null || ! grep -q "^$user:" /etc/subgid 2>/dev/null; then
        # A range no other user of this machine has: after the highest one in use.
        local start
        start=$(cat /etc/subuid /etc/subgid 2>/dev/null |
            awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }')
        grep -q "^$user:" /etc/subuid 2>/dev/null || echo "$user:$start:65536" >>/etc/subuid
        grep -q "^$user:" /etc/subgid 2>/dev/null || echo "$user:$start:65536" >>/etc/subgid
    fi
}

