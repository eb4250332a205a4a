#!/usr/bin/env bash
# Installs reconciler on a systemd host the way docs/install.md describes: a venv in
# /opt/reconciler (Debian's pip refuses the system Python, PEP 668), a link
# /usr/local/bin/reconciler (the unit's ExecStart), the unit, its sysusers.d and
# tmpfiles.d files, and example settings when none exist. Run as root from a checkout or an
# unpacked sdist:
#
#   scripts/install-opt.sh                   install here (then edit the settings and
#                                            `systemctl enable --now reconciler`)
#   scripts/install-opt.sh --gauntlet        also torch (CPU) for local gauntlets
#   scripts/install-opt.sh --root DIR        stage the same files under DIR (a package
#                                            build, or the test): the venv's paths name
#                                            /opt/reconciler, not DIR/opt/reconciler
#
# Environment: PYTHON (the system Python for the venv, default python3), PIP_ARGS (extra
# pip arguments, e.g. --no-index --find-links DIR for an offline host).
set -euo pipefail
cd "$(dirname "$0")/.."

root=/
gauntlet=no
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --gauntlet) gauntlet=yes; shift ;;
    *) echo "usage: $0 [--root DIR] [--gauntlet]" >&2; exit 2 ;;
  esac
done
root=$(realpath -m "$root")
prefix=/opt/reconciler
staged=${root%/}$prefix
read -r -a pip_args <<< "${PIP_ARGS:-}"

"${PYTHON:-python3}" -m venv --clear "$staged"
pip=("$staged/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}")
# Pinned exactly, and first: a range would fetch the newest CUDA build (several GB).
[ "$gauntlet" = yes ] && "${pip[@]}" torch==2.13.0
"${pip[@]}" .
if [ "$staged" != "$prefix" ]; then
  # Staged under another root: the scripts' #! lines and activate name the staging path;
  # make them name where the venv will live.
  grep -rlI --null -F "$staged" "$staged/bin" "$staged/pyvenv.cfg" | xargs -0 -r sed -i "s|$staged|$prefix|g"
fi

install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/sysusers.d" \
  "$root/etc/tmpfiles.d" "$root/etc/reconciler" "$root/etc/default"
ln -sfn "$prefix/bin/reconciler" "$root/usr/local/bin/reconciler"
install -m 0644 systemd/reconciler.service "$root/etc/systemd/system/reconciler.service"
install -m 0644 systemd/reconciler.sysusers "$root/etc/sysusers.d/reconciler.conf"
install -m 0644 systemd/reconciler.tmpfiles "$root/etc/tmpfiles.d/reconciler.conf"
# Settings are the administrator's: never overwritten.
[ -e "$root/etc/reconciler/reconciler.yaml" ] ||
  install -m 0644 systemd/reconciler.yaml "$root/etc/reconciler/reconciler.yaml"
[ -e "$root/etc/default/reconciler" ] ||
  install -m 0644 systemd/reconciler.default "$root/etc/default/reconciler"

if [ "$root" = / ]; then
  systemd-sysusers /etc/sysusers.d/reconciler.conf
  systemd-tmpfiles --create /etc/tmpfiles.d/reconciler.conf
  systemctl daemon-reload 2>/dev/null || true  # not booted with systemd: nothing to reload
else
  systemd-sysusers --root="$root" "$root/etc/sysusers.d/reconciler.conf"
  systemd-tmpfiles --root="$root" --create "$root/etc/tmpfiles.d/reconciler.conf"
fi
echo "installed: $prefix (reconciler $("$staged/bin/python" -c \
  'import reconciler; print(reconciler.__version__)')), $root/usr/local/bin/reconciler"
