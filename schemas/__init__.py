"""The contract between shipper and aggregator: the log record, the wire format of a batch and the
spool's segment layout. Imports nothing else of loglake."""
