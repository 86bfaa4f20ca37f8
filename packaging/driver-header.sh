#!/usr/bin/env -S -C / /bin/sh
# ax/vol_plugin @VERSION@, the FlexVolume driver. This file is this shell header followed by a zip
# archive of the driver (Python), which the header runs with the node's interpreter.
#
# Why a shell header and not a zipapp's #! line: kubelet runs `init` during its plugin probes,
# sometimes many times a second, and it is answered here without starting Python at all; the
# other calls skip the module runner a zipapp goes through (runpy and what it imports).
# python3 can still run the file directly, as a zipapp (its __main__.py). env starts the shell in
# /: a shell started in a deleted working dir warns about it on stderr before reading a line, and
# kubelet reads stdout and stderr as one JSON object (kubelet runs drivers by absolute path).
python='@PYTHON@'
if ! command -v "$python" >/dev/null 2>&1; then
  # Still one JSON object, as kubelet expects of every call.
  printf '%s\n' '{"status": "Failure", "message": "ax/vol_plugin: the interpreter @PYTHON@ (python 3.9 or newer) is not installed or not in PATH"}'
  exit 1
fi
if [ $# -eq 1 ] && [ "$1" = init ]; then
  printf '%s' '@INIT@'
  exit 0
fi
exec "$python" -I -S -c '
import sys
sys.argv[0] = sys.argv.pop(1)
sys.path.insert(0, sys.argv[0])
try:
    from flexdriver.__main__ import entry
except BaseException as err:  # an archive this interpreter cannot load: still one JSON object
    import json
    print(json.dumps({"status": "Failure", "message": "ax/vol_plugin cannot load %s: %r" % (sys.argv[0], err)}))
    sys.exit(1)
entry()
' "$0" "$@"
