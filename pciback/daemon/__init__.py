"""The daemon: configuration, wiring of ports and control plane, control socket, demo."""
