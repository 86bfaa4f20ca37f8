#!/usr/bin/env bash
# Remove the ax/vol_plugin driver from this node:
#
#   install/uninstall.sh [--plugin-dir DIR] [--admin FILE] [--admin-path PATH] [--config PATH] [--purge] [--force]
#
#   --plugin-dir DIR   as for install.sh (default: the running kubelet's, else kubelet's default)
#   --admin FILE       the built admin command that reads the config, with the driver's own
#                      parser (default dist/ax-vol-plugin of this repo; runs here, with python3)
#   --admin-path PATH  the admin command to remove (default /usr/local/sbin/ax-vol-plugin)
#   --config PATH      the config file (default /etc/ax-vol-plugin/vol_plugin.conf)
#   --purge            also delete every slab (the whole volume group, its data with it), the
#                      config, the call log and the run dir
#   --force            remove the driver even while slabs are mounted (kubelet then cannot
#                      unmount them: their pods stay Terminating until a driver is back)
#   --host-root DIR    the node's filesystem is mounted at DIR
#
# By default slabs, their data, the volume group and the config stay: installing again later
# finds the pool as it was.
set -euo pipefail

script_name=uninstall.sh
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=install/lib.sh
. "$here/lib.sh"

plugin_dir=""
admin="$(dirname "$here")/dist/ax-vol-plugin"
admin_path=$DEFAULT_ADMIN_PATH
config=$DEFAULT_CONFIG
purge=0
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --plugin-dir) [ $# -ge 2 ] || die "$1 needs a value"; plugin_dir=$2; shift 2 ;;
    --admin) [ $# -ge 2 ] || die "$1 needs a value"; admin=$2; shift 2 ;;
    --admin-path) [ $# -ge 2 ] || die "$1 needs a value"; admin_path=$2; shift 2 ;;
    --config) [ $# -ge 2 ] || die "$1 needs a value"; config=$2; shift 2 ;;
    --host-root) [ $# -ge 2 ] || die "$1 needs a value"; host_root=$2; shift 2 ;;
    --purge) purge=1; shift ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
absolute --host-root "$host_root"
absolute --admin "$admin"
absolute --admin-path "$admin_path"
absolute --config "$config"
resolve_plugin_dir

config_file=$(on_host "$config")
[ -f "$admin" ] || die "admin command $admin not found (build it with packaging/build, or give --admin FILE); nothing changed"
values=$(config_values "$admin" "$config_file" volume_group device log_file run_dir) || exit 1
{ read -r volume_group; read -r device; read -r log_file; read -r run_dir; } <<<"$values"

# Slabs mounted right now, from the node's mount table (device-mapper doubles '-' in names).
mapper_prefix="/dev/mapper/${volume_group//-/--}-slab--"
mounted=$(awk -v prefix="$mapper_prefix" '{ for (i = 7; i <= NF; i++) if ($i == "-") { if (index($(i+2), prefix) == 1) print $5; break } }' \
  "$(on_host /proc/1/mountinfo)" 2>/dev/null || true)
if [ -n "$mounted" ]; then
  count=$(printf '%s\n' "$mounted" | wc -l)
  if [ "$purge" = 1 ]; then
    die "--purge: $count slab(s) of $volume_group are mounted (first: $(printf '%s\n' "$mounted" | head -n 1)); drain the node first"
  fi
  [ "$force" = 1 ] ||
    die "$count slab(s) are mounted; without the driver kubelet cannot unmount them. Drain the node first, or --force"
fi

driver_dir="$plugin_dir/ax~vol_plugin"
if [ -d "$(on_host "$driver_dir")" ]; then
  # The driver and any staging files a killed install.sh left; then the dir itself.
  rm -f "$(on_host "$driver_dir")/vol_plugin" "$(on_host "$driver_dir")"/.vol_plugin.*
  rmdir "$(on_host "$driver_dir")" 2>/dev/null || note "left $driver_dir: it holds files not ours"
  note "removed $driver_dir/vol_plugin"
else
  note "no driver in $plugin_dir"
fi
if [ -e "$(on_host "$admin_path")" ]; then
  rm -f "$(on_host "$admin_path")"
  note "removed $admin_path"
fi

if [ "$purge" = 1 ]; then
  if run_on_host vgs "$volume_group" >/dev/null 2>&1; then
    run_on_host vgremove --force --yes "$volume_group" >/dev/null
    note "removed volume group $volume_group and every slab in it"
    if run_on_host pvs "$device" >/dev/null 2>&1; then
      run_on_host pvremove --yes "$device" >/dev/null
      note "removed the LVM label from $device"
    fi
  fi
  rm -rf "$config_file" "$(on_host "$log_file")" "$(on_host "$run_dir")"
  rmdir "$(dirname "$config_file")" 2>/dev/null || true
  note "removed $config, $log_file, $run_dir"
else
  note "slabs, their data and $config are kept (--purge removes them)"
fi
