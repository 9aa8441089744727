//! kos energy: meters, readings, simulated homes, agent fuel budgets and dispatch. Not built yet: see issue 7.
