//! kos ledger: the replicated append-only ledger (BFT consensus, state machine, storage). Not built yet: see issue 5.
