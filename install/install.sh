#!/usr/bin/env bash
# Install (or upgrade) the ax/vol_plugin driver on this node, where kubelet looks for it:
#
#   install/install.sh [--plugin-dir DIR] [--driver FILE] [--admin FILE] [--device DEV] [--vg NAME] ...
#
#   --plugin-dir DIR     kubelet's --volume-plugin-dir. Default: read from the running kubelet
#                        (its --volume-plugin-dir, else volumePluginDir in its --config file),
#                        else /usr/libexec/kubernetes/kubelet-plugins/volume/exec
#   --driver FILE        the built driver (default dist/vol_plugin of this repo)
#   --admin FILE         the built admin command (default dist/ax-vol-plugin of this repo)
#   --admin-path PATH    where the admin command goes (default /usr/local/sbin/ax-vol-plugin)
#   --no-admin           install the driver only
#   --device DEV         write the config: the slab disk
#   --vg NAME            write the config: the volume group
#   --set KEY=VALUE      write the config: any other key of [vol_plugin] (repeatable)
#   --config PATH        the config file (default /etc/ax-vol-plugin/vol_plugin.conf)
#   --skip-prerequisites report failed prerequisite checks as warnings and install anyway
#   --host-root DIR      the node's filesystem is mounted at DIR (the DaemonSet's container)
#
# Kubelet watches the plugin dir and runs `init` on every change it sees, so every file is
# copied to a dot-file beside its target (kubelet ignores dot-files), checked, and renamed into
# place in one rename(2): kubelet never sees a partial file. Running drivers keep the file they
# started from, so an upgrade is safe while pods use slabs. Nothing changes unless every check
# passes. Running it again with the same arguments is an upgrade.
set -euo pipefail

script_name=install.sh
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=install/lib.sh
. "$here/lib.sh"
repo=$(dirname "$here")

plugin_dir=""
driver="$repo/dist/vol_plugin"
admin="$repo/dist/ax-vol-plugin"
admin_path=$DEFAULT_ADMIN_PATH
config=$DEFAULT_CONFIG
skip_prerequisites=0
settings=()

need() { [ "$2" -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --plugin-dir) need "$1" $#; plugin_dir=$2; shift 2 ;;
    --driver) need "$1" $#; driver=$2; shift 2 ;;
    --admin) need "$1" $#; admin=$2; shift 2 ;;
    --admin-path) need "$1" $#; admin_path=$2; shift 2 ;;
    --no-admin) admin=""; shift ;;
    --device) need "$1" $#; settings+=("device=$2"); shift 2 ;;
    --vg) need "$1" $#; settings+=("volume_group=$2"); shift 2 ;;
    --set) need "$1" $#; settings+=("$2"); shift 2 ;;
    --config) need "$1" $#; config=$2; shift 2 ;;
    --skip-prerequisites) skip_prerequisites=1; shift ;;
    --host-root) need "$1" $#; host_root=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

absolute --host-root "$host_root"
absolute --admin-path "$admin_path"
absolute --config "$config"
[ -f "$driver" ] || die "driver $driver not found (build it with packaging/build)"
[ -z "$admin" ] || [ -f "$admin" ] || die "admin command $admin not found (build it with packaging/build, or --no-admin)"
for setting in "${settings[@]}"; do
  case "$setting" in
    [a-z]*=?*) ;;
    *) die "--set wants KEY=VALUE, got '$setting'" ;;
  esac
  case "$setting" in *$'\n'*) die "a config value cannot hold a newline" ;; esac
done
resolve_plugin_dir

# Everything is staged beside its target first; on any failure the EXIT trap removes what was
# staged and the node is as it was.
staged=()
created_dirs=()
cleanup() {
  [ ${#staged[@]} -eq 0 ] || rm -f "${staged[@]}"
  # A driver dir with no driver in it would only make kubelet log a failed probe.
  [ ${#created_dirs[@]} -eq 0 ] || rmdir "${created_dirs[@]}" 2>/dev/null || true
}
trap cleanup EXIT

stage() {  # stage SOURCE NODE_TARGET MODE: sets staged_path, the staged file's node path
  local target_dir tmp
  target_dir=$(dirname "$2")
  [ -d "$(on_host "$target_dir")" ] || created_dirs+=("$(on_host "$target_dir")")
  mkdir -p "$(on_host "$target_dir")"
  tmp=$(mktemp "$(on_host "$target_dir")/.$(basename "$2").XXXXXX")
  staged+=("$tmp")
  cat "$1" > "$tmp"
  chmod "$3" "$tmp"
  sync "$tmp" 2>/dev/null || true
  staged_path="$target_dir/$(basename "$tmp")"
}

# python3 first: without it neither the driver nor the checks can say anything useful.
version=$(run_on_host /usr/bin/env python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
  die "prerequisite python3: not found on the node -> install python3 (3.9 or newer)"
case "$version" in
  3.[0-8]) die "prerequisite python3: the node's python3 is $version, the driver needs 3.9 or newer -> install python3 >= 3.9" ;;
esac

driver_dir="$plugin_dir/ax~vol_plugin"
stage "$driver" "$driver_dir/vol_plugin" 0755
staged_driver=$staged_path
# Refuse a driver that cannot answer init on this node, or cannot load itself with this node's
# python3: init is answered by the driver's shell header alone, so a verb the driver refuses
# (getvolumename: kubelet's optional call, Not supported) is what loads the Python part.
answer=$(run_on_host "$staged_driver" init 2>&1) || die "the new driver failed init on this node: $answer"
case "$answer" in *'"status": "Success"'*) ;; *) die "the new driver answered init with: $answer" ;; esac
answer=$(run_on_host "$staged_driver" getvolumename 2>&1)
case "$answer" in
  *'"status": "Not supported"'*) ;;
  *) die "the new driver cannot run on this node: $answer" ;;
esac

staged_config=""
if [ ${#settings[@]} -gt 0 ]; then
  stage /dev/null "$config" 0644
  staged_config=$staged_path
  {
    echo "# Written by install/install.sh; keys and defaults: README.md, Configuration."
    echo "[vol_plugin]"
    for setting in "${settings[@]}"; do echo "${setting%%=*} = ${setting#*=}"; done
  } > "$(on_host "$staged_config")"
fi

staged_admin=""
if [ -n "$admin" ]; then
  stage "$admin" "$admin_path" 0755
  staged_admin=$staged_path
  # The checks read the config the driver will read once this install is done.
  config_args=()
  if [ -n "$staged_config" ]; then
    config_args=(--config "$staged_config")
  elif [ -e "$(on_host "$config")" ]; then
    config_args=(--config "$config")
  fi
  set +e
  report=$(run_on_host /usr/bin/env -u AX_VOL_PLUGIN_CONFIG "$staged_admin" "${config_args[@]}" doctor --prerequisites 2>&1)
  status=$?
  set -e
  case "$status" in
    0) ;;
    1)
      failed=$(printf '%s\n' "$report" | grep '^FAIL' | sed 's/^FAIL /prerequisite /')
      if [ "$skip_prerequisites" = 1 ]; then
        printf '%s\n' "$failed" | sed "s/^/$script_name: warning: /" >&2
      else
        printf '%s\n' "$failed" | sed "s/^/$script_name: /" >&2
        die "prerequisites missing, nothing installed (--skip-prerequisites to install anyway)"
      fi
      ;;
    *) die "checking the node failed: $report" ;;
  esac
elif [ "$skip_prerequisites" = 0 ]; then
  note "warning: no admin command (--no-admin), prerequisites not checked"
fi

# All checked: into place, the driver last so that kubelet's probe finds config and tools ready.
if [ -n "$staged_config" ]; then
  mv -f -T "$(on_host "$staged_config")" "$(on_host "$config")"
  note "wrote $config"
fi
if [ -n "$staged_admin" ]; then
  mv -f -T "$(on_host "$staged_admin")" "$(on_host "$admin_path")"
  note "installed $admin_path"
fi
mv -f -T "$(on_host "$staged_driver")" "$(on_host "$driver_dir/vol_plugin")"
trap - EXIT
echo "installed $driver_dir/vol_plugin"
