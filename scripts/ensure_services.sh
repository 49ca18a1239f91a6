#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on localhost and Debian's chromium is installed,
# starting or installing them when they are not. With CI=true a service that can't be
# brought up is a failure (exit 1), never a skip.
set -u
log() { echo "[ensure-services] $*"; }
fail() { log "ERROR: $*"; exit 1; }
apt_updated=0
apt_install() {
  if [ "$(id -u)" != "0" ]; then fail "need root to apt-get install $*"; fi
  if [ $apt_updated = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
pg_login() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then log "installing PostgreSQL"; apt_install postgresql postgresql-client || fail "could not install PostgreSQL"; fi
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  [ -n "$version" ] || fail "no PostgreSQL cluster found under /etc/postgresql"
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || fail "PostgreSQL did not start on 127.0.0.1:5432"
fi
if ! pg_login; then
  # A fresh Debian cluster asks for a password over TCP; the tests use trust on loopback.
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -w "$hba" ]; then
    log "allowing trust auth on loopback in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || pg_ctlcluster "$version" main reload || true
    sleep 1
  fi
  pg_login || fail "cannot log in to PostgreSQL as postgres on 127.0.0.1"
fi
log "PostgreSQL ok"

redis_up() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }
if ! redis_up; then
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server || fail "could not install Redis"; }
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
  redis_up || fail "Redis did not start on 127.0.0.1:6379"
fi
log "Redis ok"

if [ ! -x /usr/bin/chromium ]; then
  log "installing Debian's chromium for the browser tests"
  apt_install chromium chromium-driver || { [ "${CI:-}" = "true" ] && fail "could not install chromium"; log "WARNING: chromium missing; browser tests will fail"; }
fi
log "chromium ok"

# tests/deploy renders the install manifests with `kubectl kustomize` (offline; Debian's package).
if ! command -v kubectl >/dev/null 2>&1; then
  log "installing Debian's kubectl (kubernetes-client) for the install-manifest tests"
  apt_install kubernetes-client || { [ "${CI:-}" = "true" ] && fail "could not install kubectl"; log "WARNING: kubectl missing; tests/deploy will skip"; }
fi
log "kubectl ok"
