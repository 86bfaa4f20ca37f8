# Shared by install.sh and uninstall.sh (sourced, not run).
#
# Host paths: with --host-root DIR the node's filesystem is mounted at DIR (the DaemonSet's
# container); files are written under DIR, and commands that must see the node as kubelet sees
# it (python3, the driver's init, the prerequisite checks) run in the node's mount namespace
# through `nsenter --target 1 --mount`, which needs the pod's hostPID and privileges.

DEFAULT_PLUGIN_DIR=/usr/libexec/kubernetes/kubelet-plugins/volume/exec
DEFAULT_ADMIN_PATH=/usr/local/sbin/ax-vol-plugin
DEFAULT_CONFIG=/etc/ax-vol-plugin/vol_plugin.conf
host_root=/

die() { echo "$script_name: $*" >&2; exit 1; }
note() { echo "$script_name: $*"; }

absolute() {  # absolute NAME VALUE
  case "$2" in /*) ;; *) die "$1 must be an absolute path, got '$2'" ;; esac
}

# The node path $1 as this process sees it.
on_host() {
  if [ "$host_root" = / ]; then printf '%s\n' "$1"; else printf '%s%s\n' "${host_root%/}" "$1"; fi
}

# Run a command as it would run on the node itself (paths in it are node paths).
run_on_host() {
  if [ "$host_root" = / ]; then
    "$@"
  else
    nsenter --target 1 --mount -- "$@"
  fi
}

# kubelet's plugin dir, read from the running kubelet: its --volume-plugin-dir flag (which wins),
# else volumePluginDir in the file its --config names. Prints "DIR<TAB>where it came from", or
# nothing when no kubelet runs or it sets neither (kubelet then uses the default).
kubelet_plugin_dir() {
  local found="" source="" comm pid args i arg dir config value
  for comm in /proc/[0-9]*/comm; do
    [ "$(cat "$comm" 2>/dev/null)" = kubelet ] || continue
    pid=${comm#/proc/}; pid=${pid%/comm}
    args=()
    mapfile -d '' args < "/proc/$pid/cmdline" 2>/dev/null || continue
    dir="" config=""
    for ((i = 0; i < ${#args[@]}; i++)); do
      arg=${args[i]}
      case "$arg" in
        --volume-plugin-dir=*) dir=${arg#*=} ;;
        --volume-plugin-dir) dir=${args[i+1]:-} ;;
        --config=*) config=${arg#*=} ;;
        --config) config=${args[i+1]:-} ;;
      esac
    done
    if [ -n "$dir" ]; then
      value=$dir; source="kubelet (pid $pid) --volume-plugin-dir"
    elif [ -n "$config" ]; then
      # KubeletConfiguration is YAML or JSON; volumePluginDir is a top-level string.
      value=$(sed -n -E 's/^[[:space:]]*"?volumePluginDir"?[[:space:]]*:[[:space:]]*"?([^",#]*[^",#[:space:]])"?.*$/\1/p' \
        "$(on_host "$config")" 2>/dev/null | head -n 1)
      [ -n "$value" ] || continue
      source="volumePluginDir in kubelet's --config $config (pid $pid)"
    else
      continue
    fi
    if [ -n "$found" ] && [ "$found" != "$value" ]; then
      die "kubelets disagree on the plugin dir ($found, $value): give --plugin-dir"
    fi
    found=$value
  done
  [ -z "$found" ] || printf '%s\t%s\n' "${found%/}" "$source"
}

# Sets plugin_dir (if not given) and says where it came from.
resolve_plugin_dir() {
  local line
  if [ -n "$plugin_dir" ]; then
    absolute --plugin-dir "$plugin_dir"
    note "plugin dir $plugin_dir (--plugin-dir)"
    return
  fi
  line=$(kubelet_plugin_dir)
  if [ -n "$line" ]; then
    plugin_dir=${line%%$'\t'*}
    absolute "kubelet's plugin dir" "$plugin_dir"
    note "plugin dir $plugin_dir (from ${line#*$'\t'})"
  else
    plugin_dir=$DEFAULT_PLUGIN_DIR
    note "plugin dir $plugin_dir (kubelet's default: no running kubelet sets another)"
  fi
}

# A key of the [vol_plugin] section of a config file, or $3 when the file or key is absent. A
# comment after the value (whitespace, then # or ;) is not part of it, as for the driver.
config_value() {  # config_value FILE KEY DEFAULT
  local value
  value=$(sed -n -E "s/^[[:space:]]*$2[[:space:]]*[=:][[:space:]]*(.*)$/\1/p" "$1" 2>/dev/null | tail -n 1 |
    sed -E 's/[[:space:]]+[#;].*$//; s/[[:space:]]+$//')
  printf '%s\n' "${value:-$3}"
}
