"""One clock numbers recorded nodes as they are made and stamps in-place updates of
leaves, so a node is stale exactly when one of its leaves was stamped after it."""
import itertools

tick = itertools.count().__next__


def mark_modified(leaf):
    """Record that `leaf`'s value was changed in place (an optimizer step, a load): a
    sweep through an op recorded before this point raises instead of using the new
    value."""
    leaf._modified_at = tick()
