#!/usr/bin/env bash
# See roster run: starts a local control plane (etcd, kube-apiserver,
# kube-controller-manager), Mailpit and the operator against them, applies examples/, shows
# them and prints the invitation links to open in the portal; then registers an OidcClient
# and runs oauth2-proxy (examples/oidc/oauth2-proxy.cfg) in front of a page, to sign in to
# with OpenID Connect once onboarded.
#
#   hack/demo.sh        # up (builds what is missing first)
#   hack/demo.sh down   # stop everything and remove the demo's state
#
# State and logs live in $ROSTER_DEMO_DIR (default ~/.cache/roster/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${ROSTER_DEMO_DIR:-$HOME/.cache/roster/demo}"
METRICS_PORT="${ROSTER_DEMO_METRICS_PORT:-18080}"
SMTP_PORT="${ROSTER_DEMO_SMTP_PORT:-11025}"
MAILPIT_PORT="${ROSTER_DEMO_MAILPIT_PORT:-18025}"
PORTAL_PORT="${ROSTER_DEMO_PORTAL_PORT:-18081}"
APP_PORT="${ROSTER_DEMO_APP_PORT:-18082}"
NAMESPACE=roster-demo

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

down() {
  local pidfile
  for pidfile in "$DIR/oauth2-proxy.pid" "$DIR/roster.pid" "$DIR/mailpit.pid" "$DIR/testenv.pid"; do
    if alive "$pidfile"; then
      kill -TERM "$(cat "$pidfile")"
      for _ in $(seq 100); do alive "$pidfile" || break; sleep 0.1; done
    fi
  done
  rm -rf "$DIR"
  echo "demo stopped"
}

up() {
  if alive "$DIR/testenv.pid"; then
    echo "the demo is already running; stop it with: hack/demo.sh down" >&2
    exit 1
  fi
  hack/install-test-tools.sh >/dev/null
  cargo build --workspace --bins --quiet
  rm -rf "$DIR" && mkdir -p "$DIR"

  nohup target/debug/roster-testenv "$DIR/control-plane" crds/roster.yaml >"$DIR/testenv.log" 2>&1 &
  echo $! >"$DIR/testenv.pid"
  for _ in $(seq 1200); do
    [ -f "$DIR/control-plane/ready" ] && break
    alive "$DIR/testenv.pid" || { cat "$DIR/testenv.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -f "$DIR/control-plane/ready" ] || { echo "control plane not ready in 120s; see $DIR" >&2; exit 1; }
  export KUBECONFIG="$DIR/control-plane/kubeconfig"

  nohup "${ROSTER_CACHE:-$HOME/.cache/roster}/bin/mailpit" --smtp "127.0.0.1:$SMTP_PORT" \
    --listen "127.0.0.1:$MAILPIT_PORT" --database "$DIR/mailpit.db" --quiet >"$DIR/mailpit.log" 2>&1 &
  echo $! >"$DIR/mailpit.pid"
  kubectl create namespace roster-system >/dev/null
  kubectl create secret generic smtp -n roster-system --from-literal=host=127.0.0.1 \
    --from-literal=port="$SMTP_PORT" --from-literal=tls=none \
    --from-literal=from='Example Corp <no-reply@example.com>' >/dev/null

  nohup target/debug/roster run --metrics-addr "127.0.0.1:$METRICS_PORT" --smtp-secret roster-system/smtp \
    --portal-addr "127.0.0.1:$PORTAL_PORT" --portal-url "http://127.0.0.1:$PORTAL_PORT" \
    --org-name "Example Corp" --issuer-url "http://127.0.0.1:$PORTAL_PORT" \
    --signing-keys-secret roster-system/roster-signing-keys >"$DIR/roster.log" 2>&1 &
  echo $! >"$DIR/roster.pid"

  kubectl create namespace "$NAMESPACE" >/dev/null
  kubectl apply -n "$NAMESPACE" -f examples/
  kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.observedGeneration}'=1 \
    users,userinvites,mfaresets,passwordresets --all --timeout=60s >/dev/null
  kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.phase}'=Sent userinvites --all --timeout=60s >/dev/null
  echo
  kubectl get -n "$NAMESPACE" users,userinvites,mfaresets,passwordresets -o wide
  echo
  target/debug/roster stat -n "$NAMESPACE"
  app
  local emailed linked
  emailed=$(curl -sf "http://127.0.0.1:$MAILPIT_PORT/api/v1/message/latest" | grep -o "http://127.0.0.1:$PORTAL_PORT/invite/[A-Za-z0-9_-]*" | head -1 || true)
  linked=$(kubectl get secret -n "$NAMESPACE" john-smith-invite-link -o jsonpath='{.data.url}' | base64 -d)
  cat <<TXT

Onboard in the portal (set a password, scan the QR code with an authenticator app):
  jane.doe's emailed invitation:  ${emailed:-see Mailpit}
  john.smith's link (for admins): $linked
then watch the user turn ACTIVE: kubectl get -n $NAMESPACE users -w

Then sign in with OpenID Connect (jane.doe is in the group the app admits):
  http://127.0.0.1:$APP_PORT                      # oauth2-proxy sends you to roster's sign-in page
  http://127.0.0.1:$APP_PORT/oauth2/userinfo      # what the app learned about you
  sign out everywhere: http://127.0.0.1:$APP_PORT/oauth2/sign_out?rd=$(urlencode "http://127.0.0.1:$PORTAL_PORT/logout?client_id=$NAMESPACE.whoami&post_logout_redirect_uri=http://127.0.0.1:$APP_PORT/")
  discovery: http://127.0.0.1:$PORTAL_PORT/.well-known/openid-configuration

roster is running against a local control plane.
  export KUBECONFIG=$KUBECONFIG
  kubectl get -n $NAMESPACE users -o yaml        # status and conditions
  target/debug/roster list -n $NAMESPACE --phase pending   # the admin CLI (also: resend, link, reset-mfa, …)
  target/debug/roster import examples/import/realm.json -n $NAMESPACE --against-cluster -o - | kubectl apply -f -   # import people
  curl -s 127.0.0.1:$METRICS_PORT/metrics         # Prometheus metrics
  http://127.0.0.1:$MAILPIT_PORT                  # Mailpit: the invitation email roster sent
  logs: $DIR/roster.log, $DIR/oauth2-proxy.log, $DIR/control-plane/logs/
Tear down: hack/demo.sh down
TXT
}

urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# An application behind oauth2-proxy, registered as OidcClient whoami: the example's
# configuration with the demo's addresses and the client secret roster generated.
app() {
  kubectl apply -n "$NAMESPACE" -f - >/dev/null <<YAML
apiVersion: roster.dev/v1alpha1
kind: OidcClient
metadata: {name: whoami}
spec:
  redirectUris: [http://127.0.0.1:$APP_PORT/oauth2/callback]
  postLogoutRedirectUris: [http://127.0.0.1:$APP_PORT/]
  allowedGroups: [developers]
YAML
  kubectl wait -n "$NAMESPACE" --for=condition=Ready oidcclient/whoami --timeout=60s >/dev/null
  local secret cookie
  secret=$(kubectl get secret -n "$NAMESPACE" whoami-oidc -o jsonpath='{.data.clientSecret}' | base64 -d)
  cookie=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  OAUTH2_PROXY_CLIENT_SECRET="$secret" OAUTH2_PROXY_COOKIE_SECRET="$cookie" \
    nohup "${ROSTER_CACHE:-$HOME/.cache/roster}/bin/oauth2-proxy" --config examples/oidc/oauth2-proxy.cfg \
    --oidc-issuer-url "http://127.0.0.1:$PORTAL_PORT" --client-id "$NAMESPACE.whoami" \
    --redirect-url "http://127.0.0.1:$APP_PORT/oauth2/callback" --http-address "127.0.0.1:$APP_PORT" \
    --upstream static://200 --cookie-secure=false --whitelist-domain "127.0.0.1:$PORTAL_PORT" \
    >"$DIR/oauth2-proxy.log" 2>&1 &
  echo $! >"$DIR/oauth2-proxy.pid"
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$APP_PORT/ping" >/dev/null && return 0
    alive "$DIR/oauth2-proxy.pid" || break
    sleep 0.1
  done
  cat "$DIR/oauth2-proxy.log" >&2
  echo "oauth2-proxy did not start; see $DIR/oauth2-proxy.log" >&2
  exit 1
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: hack/demo.sh [up|down]" >&2; exit 2 ;;
esac
