"""Guest op traces: recorded by the daemon (`pciback trace record`) and replayed against a
policy on a simulated device (`pciback trace replay`). The file format is docs/trace-format.md.

This room holds what the daemon itself needs (the format, the in-daemon recording, its limits)
and the policy identity; the recorder's client side is pciback.cli.trace_record and the replay
pciback.sim.replay, above the daemon they talk to or stand in for."""
