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

# Whether root alone can change PATH, which must exist: it must be root's and writable by no
# group or other user; so must every dir above it, except that those may be sticky as /tmp is
# (other users can then neither rename nor remove what root owns in them). Links are not
# followed: a link anywhere on the way is refused, since whoever owns the dir it is in could
# point it elsewhere. Sets `why` when it says no.
only_root_can_change() {  # only_root_can_change PATH
  local path=$1 first=1 uid mode kind
  while :; do
    IFS=: read -r uid mode kind < <(stat -c '%u:%a:%F' -- "$path" 2>/dev/null) || { why="$path: cannot stat it"; return 1; }
    if [ "$kind" = "symbolic link" ]; then why="$path is a symbolic link"; return 1; fi
    if [ "$uid" != 0 ]; then why="$path is owned by uid $uid, not root"; return 1; fi
    if (( (8#$mode & 8#022) != 0 )) && { [ "$first" = 1 ] || (( (8#$mode & 8#1000) == 0 )); }; then
      why="$path is writable by others than root (mode $mode)"; return 1
    fi
    [ "$path" = / ] && return 0
    path=$(dirname -- "$path"); first=0
  done
}

# Whether process PID is a kubelet root runs from a file only root can change. Any user can start
# a process and name it `kubelet` (prctl PR_SET_NAME); such a one must not choose the dir where
# root installs the driver and runs it for its checks.
trusted_kubelet() {  # trusted_kubelet PID
  local uids exe_owner exe_mode
  uids=$(awk '$1 == "Uid:" { print $2 $3 $4 $5 }' "/proc/$1/status" 2>/dev/null)
  [ "$uids" = 0000 ] || return 1
  # /proc/PID/exe leads to the very file the process runs, whichever mount namespace it is in.
  IFS=: read -r exe_owner exe_mode < <(stat -L -c '%u:%a' "/proc/$1/exe" 2>/dev/null) || return 1
  [ "$exe_owner" = 0 ] && (( (8#$exe_mode & 8#022) == 0 ))
}

# Refuses (dies) unless root alone can change the plugin dir, or, where it does not exist yet,
# the nearest dir above it that does (install.sh makes the rest).
check_plugin_dir() {
  local dir
  dir=$(on_host "$plugin_dir")
  while [ ! -e "$dir" ] && [ ! -L "$dir" ]; do dir=$(dirname -- "$dir"); done
  only_root_can_change "$dir" ||
    die "refusing plugin dir $plugin_dir: $why (the driver there runs as root for every pod; a dir others can change would let them replace it)"
}

# kubelet's plugin dir, read from the running kubelet: its --volume-plugin-dir flag (which wins),
# else volumePluginDir in the file its --config names. Prints "DIR<TAB>where it came from", or
# nothing when no kubelet runs or it sets neither (kubelet then uses the default). Processes
# named kubelet that are not trusted_kubelet are passed over, with a line on stderr.
kubelet_plugin_dir() {
  local found="" source="" comm pid args i arg dir config value
  for comm in /proc/[0-9]*/comm; do
    [ "$(cat "$comm" 2>/dev/null)" = kubelet ] || continue
    pid=${comm#/proc/}; pid=${pid%/comm}
    if ! trusted_kubelet "$pid"; then
      echo "$script_name: ignoring process $pid named kubelet: not root's, or run from a file others can change" >&2
      continue
    fi
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
    check_plugin_dir
    note "plugin dir $plugin_dir (--plugin-dir)"
    return
  fi
  line=$(kubelet_plugin_dir)
  if [ -n "$line" ]; then
    plugin_dir=${line%%$'\t'*}
    absolute "kubelet's plugin dir" "$plugin_dir"
    check_plugin_dir
    note "plugin dir $plugin_dir (from ${line#*$'\t'})"
  else
    plugin_dir=$DEFAULT_PLUGIN_DIR
    check_plugin_dir
    note "plugin dir $plugin_dir (kubelet's default: no running kubelet sets another)"
  fi
}

# The values of KEYs in the node config FILE, one line each, as the driver reads them: asked of
# the admin command ADMIN, whose parser is the driver's own (a reader of its own here read some
# files otherwise than the driver: key case, continuation lines, sections, a file the driver
# refuses; and uninstall --purge deletes what the values name). ADMIN runs as root, so it must be
# a file only root can change. A FILE that does not exist gives the driver's defaults (the
# driver reads no file as an empty one). Dies, naming both, if the values cannot be had.
config_values() {  # config_values ADMIN FILE KEY...
  local admin=$1 file=$2 values errors
  shift 2
  only_root_can_change "$admin" || die "refusing to run the admin command $admin: $why; nothing changed"
  [ -e "$file" ] || file=/dev/null
  # Its errors kept apart from its answer, so that nothing but values is ever read as one.
  errors=$(mktemp)
  if ! values=$(/usr/bin/env -u AX_VOL_PLUGIN_CONFIG "$admin" --config "$file" config "$@" 2>"$errors" </dev/null); then
    values=$(cat "$errors"); rm -f "$errors"
    die "cannot read the config with $admin: ${values:-no message}; nothing changed"
  fi
  rm -f "$errors"
  printf '%s\n' "$values"
}
