//! The slowest calls of a graph edge or a latency bucket, kept as example traces.

/// How many example trace ids an edge or bucket keeps.
pub(crate) const EXAMPLES: usize = 3;

/// The slowest calls of an edge or bucket: `(duration, trace id)`, slowest first, ties
/// by trace id, so the choice does not depend on scan order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Examples(pub(crate) Vec<(i64, [u8; 16])>);

impl Examples {
    #[inline]
    pub(crate) fn offer(&mut self, duration: i64, trace: &[u8; 16]) {
        if self.0.len() == EXAMPLES
            && !Self::before(&(duration, *trace), self.0.last().expect("full"))
        {
            return;
        }
        if self.0.iter().any(|(d, t)| *d == duration && t == trace) {
            return;
        }
        let at = self
            .0
            .iter()
            .position(|e| Self::before(&(duration, *trace), e))
            .unwrap_or(self.0.len());
        self.0.insert(at, (duration, *trace));
        self.0.truncate(EXAMPLES);
    }

    fn before(a: &(i64, [u8; 16]), b: &(i64, [u8; 16])) -> bool {
        (std::cmp::Reverse(a.0), a.1) < (std::cmp::Reverse(b.0), b.1)
    }

    pub(crate) fn merge(&mut self, other: &Examples) {
        for (d, t) in &other.0 {
            self.offer(*d, t);
        }
    }

    pub(crate) fn remove(&mut self, duration: i64, trace: &[u8; 16]) {
        self.0.retain(|(d, t)| !(*d == duration && t == trace));
    }

    pub(crate) fn hex(&self) -> Vec<String> {
        self.0.iter().map(|(_, t)| hex::encode(t)).collect()
    }
}
