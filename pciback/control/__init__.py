"""The control plane: which devices the backend takes, and the operator's knobs on them."""
