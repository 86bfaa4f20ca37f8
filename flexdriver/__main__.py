"""Entry point. `init` is answered before anything else is imported: kubelet runs it
synchronously during plugin probes, sometimes many times a second."""

import sys

from flexdriver import INIT_RESPONSE


def entry() -> None:
    if sys.argv[1:] == ["init"]:
        sys.stdout.write(INIT_RESPONSE)
        sys.stdout.flush()
        sys.exit(0)
    from flexdriver.kubelet import main

    sys.exit(main())


if __name__ == "__main__":
    entry()
