"""The soak run's guest side (make soak): many pod cycles through the installed driver, with
the node's LVM and log footprint read after every block of them."""
