"""The xenbus side of the backend: the Linux driver's xenstore layout and state machine."""
