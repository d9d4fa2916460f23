"""The simulated host: devices built from config dumps, a simulated hypervisor and frontend."""
