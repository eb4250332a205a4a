#!/usr/bin/env bash
# The host tools reconciler and its tests drive for real: bwrap (Debian's bubblewrap: the
# sandbox all repository code runs in; without it repository code does not run),
# systemd-analyze (the unit file), promtool (Debian's prometheus package: metrics
# exposition), git (and its http-backend), ssh-keygen and gpg (signed commits), prlimit
# (util-linux: the sandbox's rlimits), sshd (fetching over SSH with a key and a checked host
# key), bash/zsh/fish (the completion scripts, run in the real shells), npm (Ajv checks the
# schemas in strict mode; the tests install it into .cache/ajv). Installed with apt-get
# when missing; a machine without them cannot run the suite, so this fails loudly rather
# than letting tests skip.
# Arguments name a subset of the tools (run.sh needs only the sandbox: bwrap prlimit).
set -euo pipefail
declare -A package_of=([bwrap]=bubblewrap [prlimit]=util-linux [systemd-analyze]=systemd
                       [promtool]=prometheus [git]=git [ssh-keygen]=openssh-client [gpg]=gpg
                       [sshd]=openssh-server [zsh]=zsh [fish]=fish [npm]=npm)
tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=("${!package_of[@]}")
missing=()
for tool in "${tools[@]}"; do
  # sshd lives in /usr/sbin, outside a user's PATH
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
    missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing host tools; install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
