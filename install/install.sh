#!/usr/bin/env bash
# Install the ax/vol_plugin driver where kubelet looks for it:
#
#   install/install.sh [--plugin-dir DIR] [--driver FILE]
#
#   --plugin-dir  kubelet's --volume-plugin-dir
#                 (default /usr/libexec/kubernetes/kubelet-plugins/volume/exec)
#   --driver      the built driver (default: dist/vol_plugin beside this script's repo)
#
# Kubelet watches the plugin dir and runs `init` on every change it sees, so the driver is
# copied to a dot-file (which kubelet ignores), checked, and renamed into place in one
# rename(2): kubelet never sees a partial file, and nothing else is left in the driver's dir.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
plugin_dir=/usr/libexec/kubernetes/kubelet-plugins/volume/exec
driver="$here/dist/vol_plugin"

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --plugin-dir) [ $# -ge 2 ] || die "--plugin-dir needs a value"; plugin_dir=$2; shift 2 ;;
    --driver) [ $# -ge 2 ] || die "--driver needs a value"; driver=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

case "$plugin_dir" in /*) ;; *) die "--plugin-dir must be an absolute path, got $plugin_dir" ;; esac
[ -f "$driver" ] || die "driver $driver not found (build it with packaging/build)"

target_dir="$plugin_dir/ax~vol_plugin"
mkdir -p "$target_dir"
tmp=$(mktemp "$target_dir/.vol_plugin.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cp "$driver" "$tmp"
chmod 0755 "$tmp"
# Refuse to install a driver that cannot answer init on this node (e.g. no usable python3).
answer=$("$tmp" init 2>&1) || die "the new driver failed init on this node: $answer"
case "$answer" in *'"status": "Success"'*) ;; *) die "the new driver answered init with: $answer" ;; esac
sync "$tmp" 2>/dev/null || true
mv -f -T "$tmp" "$target_dir/vol_plugin"
trap - EXIT
echo "installed $target_dir/vol_plugin"
