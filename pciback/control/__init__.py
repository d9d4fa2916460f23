"""The control plane: which devices the backend takes, and the operator's knobs on them.

hide (the hide, slot and quirk syntax), stub (the pool of seized devices), ownership (which
guest holds which device), reconcile (start-up: saved ownership against what is live) and the
state they keep across restarts (state, with state_dir, state_journal and state_writer).
"""
