"""Search: the study file as frozen dataclasses, the conditional search space, samplers and
pruners, and the study loop (ask → train a pack → tell) with its leases and takeovers.
Optuna's world; training goes through `lrsweep.train`'s public functions, the store through
`lrsweep.store`."""
