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

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root for: $*"; exit 1
  fi
}

apt_install() {
  log "apt-get install $*"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null \
    || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

# --- system tools, only if missing ------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

# --- the bench venv ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && "$PYTHON" -m venv "$VENV"; }
  printf '*\n' > "$VENV/.gitignore"   # keep the venv out of git, as newer venvs do themselves
fi
stamp="$VENV/.stack-requirements"
want="$(cat "$HERE/requirements.txt" "$HERE/requirements-optional.txt")"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing candidates into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-optional.txt" \
    || log "granian did not install: its target will be skipped"
  printf '%s' "$want" > "$stamp"
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
  if { [ -x "$LVENV/bin/python" ] || "$PYTHON" -m venv "$LVENV"; } \
     && printf '*\n' > "$LVENV/.gitignore" \
     && "$LVENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-litellm.txt"; then
    printf '%s' "$lwant" > "$lstamp"
  else
    log "LiteLLM did not install into $LVENV: the litellm target will be skipped"
  fi
fi

# turnout itself, as the project is now (cheap when nothing changed).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT" \
  || log "turnout did not install into $VENV: its targets will be skipped"

export PATH="$PATH:/usr/sbin"
exec "$VENV/bin/python" "$HERE/harness.py" "$@"
