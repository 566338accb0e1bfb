//! Coalescing a queue into batches: the shape both of keel's batching senders share (a
//! follower's forwarder, a leader's intake). One sender takes the first waiting item, then
//! whatever else is already waiting, up to a limit; under load batches grow, at rest an item
//! waits for nothing.

/// The batch that starts with `first`: the items `try_next` yields at once, in order, while the
/// batch is under `items_max` and `joins` (given the batch so far and the next item) accepts
/// them. The first item `joins` refuses is returned apart, to start the next batch.
pub fn coalesce<T>(
    first: T,
    items_max: usize,
    mut try_next: impl FnMut() -> Option<T>,
    mut joins: impl FnMut(&[T], &T) -> bool,
) -> (Vec<T>, Option<T>) {
    let mut batch = vec![first];
    while batch.len() < items_max {
        let Some(next) = try_next() else {
            break;
        };
        if !joins(&batch, &next) {
            return (batch, Some(next));
        }
        batch.push(next);
    }
    (batch, None)
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn batches_stop_at_the_limit_at_a_refusal_and_when_nothing_waits() {
        let mut waiting = vec![5, 4, 3, 2, 1];
        let (batch, held) = coalesce(0, 3, || waiting.pop(), |_, _| true);
        assert_eq!((batch, held), (vec![0, 1, 2], None));
        let (batch, held) = coalesce(0, 10, || waiting.pop(), |_, next| *next != 4);
        assert_eq!((batch, held), (vec![0, 3], Some(4)));
        let (batch, held) = coalesce(9, 10, || waiting.pop(), |_, _| true);
        assert_eq!((batch, held), (vec![9, 5], None));
    }
}
