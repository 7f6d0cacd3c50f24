#!/usr/bin/env bash
# Builds the programs roster's tests run against — kube-apiserver, kube-controller-manager,
# etcd, Mailpit, Helm and oauth2-proxy (a relying party of roster's OpenID Connect issuer) —
# from their Go modules at pinned versions, and cargo-deny from crates.io, into a cache
# outside the repo; installs
# Chromium, ChromeDriver and Lua 5.1 from Debian's packages.
#
# Idempotent: each binary carries a stamp naming its version; a warm run only checks stamps.
# Prints the bin directory on its last line of stdout.
#
#   hack/install-test-tools.sh            # build what is missing
#   ROSTER_CACHE=/elsewhere hack/...      # cache root (default ~/.cache/roster)
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
MAILPIT_VERSION="${MAILPIT_VERSION:-v1.31.0}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
# v7.8.1: the newest release the Go module proxy serves here (later ones are refused).
OAUTH2_PROXY_VERSION="${OAUTH2_PROXY_VERSION:-v7.8.1}"
CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"

CACHE="${ROSTER_CACHE:-$HOME/.cache/roster}"
BIN="$CACHE/bin"
BUILD="$CACHE/build"
mkdir -p "$BIN" "$BUILD"

log() { echo "install-test-tools: $*" >&2; }

command -v go >/dev/null || { log "go is required to build the test tools"; exit 1; }

# up_to_date NAME VERSION: the binary exists and was built from VERSION.
up_to_date() {
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/$1.version" 2>/dev/null)" = "$2" ]
}
stamp() { echo "$2" >"$BIN/$1.version"; }

# A throwaway module that requires k8s.io/kubernetes and points every staging module
# (replaced by local paths in Kubernetes' own go.mod) at its published v0.X.Y.
build_kubernetes() {
  local want=() cmd
  for cmd in kube-apiserver kube-controller-manager; do
    up_to_date "$cmd" "$KUBERNETES_VERSION" || want+=("$cmd")
  done
  [ ${#want[@]} -eq 0 ] && return 0

  log "building ${want[*]} $KUBERNETES_VERSION (cold: several minutes)"
  local dir="$BUILD/kubernetes-$KUBERNETES_VERSION"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  local gomod major minor
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }

  rm -rf "$dir" && mkdir -p "$dir"
  (
    cd "$dir"
    go mod init roster.dev/test-tools/kubernetes >/dev/null 2>&1
    local edits=(-require="k8s.io/kubernetes@$KUBERNETES_VERSION")
    local module
    for module in $(sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod"); do
      edits+=(-replace="$module=$module@$staging_version")
    done
    go mod edit "${edits[@]}"
    for cmd in "${want[@]}"; do
      go get "k8s.io/kubernetes/cmd/$cmd@$KUBERNETES_VERSION"
    done

    major=${KUBERNETES_VERSION#v}; major=${major%%.*}
    minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
    local ldflags="-s -w"
    local pkg
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for cmd in "${want[@]}"; do
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd.tmp" "$BIN/$cmd"
      stamp "$cmd" "$KUBERNETES_VERSION"
    done
  )
}

# build_module NAME VERSION PACKAGE: `go build` PACKAGE inside a throwaway module that
# requires it at VERSION. Unlike `go install pkg@version` this neither obeys replace
# directives of the package's own go.mod nor needs the proxy's version list (which it
# refuses for some modules, e.g. Mailpit).
build_module() {
  local name=$1 version=$2 package=$3
  up_to_date "$name" "$version" && return 0
  log "building $name $version"
  local dir="$BUILD/$name-$version"
  rm -rf "$dir" && mkdir -p "$dir"
  (
    cd "$dir"
    go mod init "roster.dev/test-tools/$name" >/dev/null 2>&1
    go get "$package@$version"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/$name.tmp" "$package"
    mv "$BIN/$name.tmp" "$BIN/$name"
    stamp "$name" "$version"
  )
}

# Debian's packages: Chromium and its WebDriver for the portal's browser test, Lua 5.1 (as
# Argo CD embeds it) for the health-check test. apt is the only place they come from.
install_debian_packages() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v lua5.1 >/dev/null && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver lua5.1)
  log "installing chromium, chromium-driver and lua5.1 from Debian's packages"
  "${sudo[@]}" "${install[@]}" >&2 || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" "${install[@]}" >&2; }
}

# cargo-deny (licences, bans, sources of the crates), from crates.io; without its default
# features it has no advisory-database fetching, which this CI cannot reach anyway.
install_cargo_deny() {
  up_to_date cargo-deny "$CARGO_DENY_VERSION" && return 0
  log "building cargo-deny $CARGO_DENY_VERSION (cold: about two minutes)"
  local root="$BUILD/cargo-deny-$CARGO_DENY_VERSION"
  cargo install --quiet --locked --no-default-features --root "$root" cargo-deny --version "$CARGO_DENY_VERSION" >&2
  cp "$root/bin/cargo-deny" "$BIN/cargo-deny.tmp"
  mv "$BIN/cargo-deny.tmp" "$BIN/cargo-deny"
  stamp cargo-deny "$CARGO_DENY_VERSION"
}

install_debian_packages
install_cargo_deny
build_module etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3
build_module mailpit "$MAILPIT_VERSION" github.com/axllent/mailpit
build_module helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm
build_module oauth2-proxy "$OAUTH2_PROXY_VERSION" github.com/oauth2-proxy/oauth2-proxy/v7
build_kubernetes

echo "$BIN"
