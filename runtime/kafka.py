"""What both Kafka clients (the shipper's producer, the aggregator's consumer) make of aiokafka's errors.

aiokafka's own ``retriable`` flag cannot decide alone: a request timeout or an unknown error is flagged
not retriable although the next attempt usually succeeds, and "message too large" and "topic not
authorised" are both not retriable although one concerns a batch and the other every batch. So: an error
that concerns one batch is ``BatchRefusedError`` (set aside, the rest goes on), one that concerns who we
are is ``AccessDeniedError`` (stop with one sentence), and anything else is a ``TransportError`` retried
with backoff, as an outage.
"""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from runtime.errors import AccessDeniedError, BatchRefusedError, TransportError

# A corrupt record (a CRC the broker recomputes differently: a flipped bit on the way) and an invalid
# timestamp (the node's clock far off: every batch alike) are not this batch's fault: retried, as outages.
_BATCH_REFUSED: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError, kafka_errors.RecordListTooLargeError)
_ACCESS_DENIED: tuple[type[Exception], ...] = (
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError, kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.AuthenticationFailedError, kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError, kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.InvalidTopicError)


def kind(e: BaseException) -> type[TransportError]:
    """Which of our transport errors an aiokafka error is."""
    if isinstance(e, _BATCH_REFUSED):
        return BatchRefusedError
    if isinstance(e, _ACCESS_DENIED):
        return AccessDeniedError
    return TransportError


def refusal(e: BaseException, where: str) -> TransportError | None:
    """The error that will not go away by itself, for an aiokafka error met talking to ``where`` (the
    cluster or a topic); None for an outage, which the caller reports in its own words and retries."""
    found = kind(e)
    if found is BatchRefusedError:
        return BatchRefusedError(f"Kafka refuses this batch for {where} for good ({e}); raise the topic's "
                                 "max.message.bytes to at least [kafka] max_message_bytes, or lower "
                                 "[shipper] batch_max_bytes")
    if found is AccessDeniedError:
        return AccessDeniedError(f"Kafka denies access to {where} ({e}); check the client certificate or SASL "
                                 "credentials and the ACLs that grant this principal the topic (and, for an "
                                 "aggregator, its consumer group)")
    return None
