"""Guest op traces: recorded by the daemon (`pciback trace record`) and replayed against a
policy on a simulated device (`pciback trace replay`). The file format is docs/trace-format.md."""
