#!/usr/bin/env bash
# Stack benchmark for turnout: bash bench/stack/run.sh [--smoke] [harness options]
#   (no option)  full run, ~10 minutes: writes bench/results/stack.{md,json}
#   --smoke      1 s per load, a check that every target starts and routes right
#                (no timing claims): writes bench/results/stack-smoke.{md,json}
#   --help       all harness options (--only, --duration, --list, ...)
# Installs what is missing: nginx, wrk (apt), and the Python candidates into
# bench/.venv-stack, LiteLLM into bench/.venv-litellm (never into the system python).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/bench/.venv-stack"
PYTHON="${PYTHON:-python3}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# nginx lives in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root for: $*"; exit 1
  fi
}

apt_install() {
  local t0=$SECONDS
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists (install would only say "Unable to locate"):
  # fetch them first. Stale lists (a 404 on download) get one retry after an update.
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    as_root apt-get update -q >/dev/null
  fi
  as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null \
    || { log "apt-get install failed: apt-get update, then again"
         as_root apt-get update -q >/dev/null \
           && as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null; } \
    || die "apt-get install $* failed"
  log "apt-get install $*: $((SECONDS - t0)) s"
}

# A venv with pip in DIR (python3 -m venv needs Debian's python3-venv for ensurepip).
make_venv() {
  "$1/bin/python" -m pip --version >/dev/null 2>&1 && return 0
  log "creating $1"
  "$PYTHON" -m venv "$1" >/dev/null 2>&1 \
    || { apt_install python3-venv && "$PYTHON" -m venv "$1"; } \
    || return 1
  printf '*\n' > "$1/.gitignore"   # keep the venv out of git, as newer venvs do themselves
}

# --- system tools, only if missing ------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
# The harness pins the load to core 0 and the proxy to core 1 (core 0 too on 1 core).
taskset -c 0 true || die "cannot pin to core 0 (taskset -c 0): allowed CPUs $(taskset -pc $$ 2>&1)"
if [ "$(getconf _NPROCESSORS_ONLN)" -ge 2 ]; then
  taskset -c 1 true || die "cannot pin to core 1 (taskset -c 1): allowed CPUs $(taskset -pc $$ 2>&1)"
fi

# --- the bench venv ---------------------------------------------------------------
t0=$SECONDS
make_venv "$VENV" || die "could not create $VENV"
stamp="$VENV/.stack-requirements"
want="$(cat "$HERE/requirements.txt" "$HERE/requirements-optional.txt")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing candidates into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-optional.txt" \
    || log "granian did not install: its target will be skipped (failed with --strict)"
  printf '%s' "$want" > "$stamp"
  log "$VENV ready: $((SECONDS - t0)) s"
fi

# --- LiteLLM, the alternative, in a venv of its own ---------------------------------
# Its dependency tree is large and pins its own versions of aiohttp & co: it must not
# touch the candidates' pins. Reinstalled only when requirements-litellm.txt changes.
# Only when this run may use it: no --only, or an --only naming litellm.
want_litellm=1
prev=""
for arg in "$@"; do
  case "$prev" in --only) case ",$arg," in *,litellm,*) ;; *) want_litellm=0 ;; esac ;; esac
  case "$arg" in
    --only=*) case ",${arg#--only=}," in *,litellm,*) ;; *) want_litellm=0 ;; esac ;;
    --render|--render=*|--list|-h|--help) want_litellm=0 ;;
  esac
  prev="$arg"
done
LVENV="$ROOT/bench/.venv-litellm"
lstamp="$LVENV/.litellm-requirements"
lwant="$(cat "$HERE/requirements-litellm.txt")"
if [ "$want_litellm" = 1 ] && { [ ! -f "$lstamp" ] || [ "$(cat "$lstamp")" != "$lwant" ]; }; then
  log "installing LiteLLM into $LVENV (once; a few minutes)"
  t0=$SECONDS
  if make_venv "$LVENV" \
     && "$LVENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-litellm.txt"; then
    printf '%s' "$lwant" > "$lstamp"
    log "LiteLLM installed: $((SECONDS - t0)) s"
  else
    log "LiteLLM did not install into $LVENV: the litellm target will be skipped (failed with --strict)"
  fi
fi

# turnout itself, as the project is now (cheap when nothing changed).
t0=$SECONDS
if "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT"; then
  log "turnout installed into $VENV: $((SECONDS - t0)) s; setup took ${SECONDS} s in all"
else
  log "turnout did not install into $VENV: its targets will be skipped (failed with --strict)"
fi

exec "$VENV/bin/python" "$HERE/harness.py" "$@"
