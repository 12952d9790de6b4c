"""Where the aggregator reads batches from: Kafka or the embedded spool, behind one protocol (base)."""
