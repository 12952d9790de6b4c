"""What the shipper and the aggregator must agree on: the log record, the wire
format of a batch, the transports' endpoints and the configuration loader."""
