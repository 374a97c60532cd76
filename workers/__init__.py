"""Shared inference workers: consumer group on the crops stream, dynamic batching, one model
call per batch, labels published before the crops are acknowledged."""
