"""One exception tree for every expected failure.

Each class carries the process exit code the CLI uses for it and whether a client may retry the
operation (Kafka's retriable errors: a leader change, a replica catching up). Messages name the
object and the way out, e.g. ``topic 'orders' does not exist (see: kctl topic list)``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class KctlError(Exception):
    """Base of every error kctl raises on purpose."""

    exit_code: int = EXIT_FAILED
    retriable: bool = False


# -- usage: bad flags or arguments (exit 2) ---------------------------------------------------
class UsageError(KctlError):
    exit_code = EXIT_USAGE


class InvalidTopicError(UsageError):
    """A topic name Kafka would refuse (charset, length, '.' or '..')."""


class InvalidConfigError(UsageError):
    """An unknown topic config key or a value of the wrong type or range."""


class InvalidArgumentError(UsageError):
    """An argument that is well-formed for the shell but meaningless here (offset spec, partition)."""


# -- the cluster is unavailable (exit 3) -------------------------------------------------------
class ClusterUnavailableError(KctlError):
    exit_code = EXIT_UNAVAILABLE


class NotInitializedError(ClusterUnavailableError):
    """The data directory holds no cluster (or not one of ours)."""


class NoLiveBrokerError(ClusterUnavailableError):
    retriable = True


class PartitionOfflineError(ClusterUnavailableError):
    """No live in-sync replica can lead the partition."""

    retriable = True


# -- the operation failed (exit 1) -------------------------------------------------------------
class ClusterExistsError(KctlError):
    pass


class UnknownTopicError(KctlError):
    pass


class TopicExistsError(KctlError):
    pass


class UnknownPartitionError(KctlError):
    pass


class InvalidReplicationFactorError(KctlError):
    pass


class InvalidPartitionsError(KctlError):
    pass


class BrokerError(KctlError):
    """A broker could not be started, stopped or signalled."""


class UnknownBrokerError(KctlError):
    pass


class RecordTooLargeError(KctlError):
    """A batch exceeds ``max.message.bytes`` (MESSAGE_TOO_LARGE)."""


class InvalidRecordError(KctlError):
    """A record the log refuses, e.g. one without a key on a compacted topic (INVALID_RECORD)."""


class NotEnoughReplicasError(KctlError):
    """acks=all with an ISR smaller than ``min.insync.replicas`` (NOT_ENOUGH_REPLICAS)."""

    retriable = True


class NotLeaderError(KctlError):
    """The replica written to is no longer the leader for the epoch expected (fencing)."""

    retriable = True


class FencedLeaderEpochError(NotLeaderError):
    pass


class OffsetOutOfRangeError(KctlError):
    pass


class CorruptRecordError(KctlError):
    """A record batch failed its size, magic or CRC check."""


class KctlTimeoutError(KctlError):
    """An operation did not complete in time; its outcome may be unknown."""

    retriable = True


class DeliveryError(KctlError):
    """Some records could not be delivered; the message says how many."""


class GroupError(KctlError):
    pass


class UnknownGroupError(GroupError):
    pass


class GroupNotEmptyError(GroupError):
    """The operation needs a group without live members."""


class RebalanceInProgressError(GroupError):
    retriable = True


class FencedMemberError(GroupError):
    """This member's generation is gone: it was removed from the group."""

    retriable = True


class ConnectorError(KctlError):
    pass


class StreamError(KctlError):
    pass
