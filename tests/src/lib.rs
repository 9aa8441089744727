//! kos multi-node tests: helpers for running `kos` processes and seeded simulations (see `tests/it`).
