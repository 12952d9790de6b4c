"""loglake-shipper: the node agent that tails container logs and ships batches."""
