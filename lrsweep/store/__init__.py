"""The store: Optuna's own schema on SQLite or PostgreSQL. Opening a storage URL, batched
writes, leases, trained weights as artifacts, and the one module that touches Optuna's private
API. Free of torch, so reading a study starts fast."""
