//! Which span files may hold a trace: one small split-block bloom filter per file, held in
//! memory and written beside the file as `<file>.tids`.
//!
//! ```text
//!  flush: sorted trace ids of the file ─> distinct ─> TraceIdFilter ─> <file>.tids (durable)
//!  open:  manifest files ─> read <file>.tids (missing or corrupt: rebuilt from the file)
//!  query: trace_id = X / IN (...) ─> files whose filter may hold X ─> Parquet scan
//! ```
//!
//! Why not only Parquet's own bloom filter: it lives in each file and is read from it on every
//! lookup (~256 KiB per 160k-span file), so a lookup costs one read per file and grows with
//! the number of files. These filters take ~1.25 bytes per distinct trace id in memory
//! (12.5 MB for 10 million traces) and answer without any I/O, so a lookup opens only the
//! file(s) that hold the trace (plus ~1% false positives).

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::{Path as ObjectPath, PathPart};

use crate::error::{Error, Result};
use crate::object::ObjectStorage;

/// Bits per distinct trace id: ~1% false positives with 8 probes per block.
const BITS_PER_KEY: usize = 10;
const MAGIC: &[u8; 4] = b"WTI1";
/// Salts of the split-block bloom filter (the same as Parquet's SBBF).
const SALT: [u32; 8] = [
    0x47b6_137b,
    0x4497_4d91,
    0x8824_ad5b,
    0xa2b7_289d,
    0x7054_95c7,
    0x2df1_424b,
    0x9efc_4947,
    0x5c6b_fb31,
];

/// A split-block bloom filter over trace ids: each id sets one bit in each of the 8 words of
/// one 256-bit block, so a probe touches one cache line.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceIdFilter {
    blocks: Vec<[u32; 8]>,
}

impl TraceIdFilter {
    /// A filter sized for `distinct` ids, holding `ids` (duplicates are harmless).
    pub fn build<'a>(distinct: usize, ids: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let bits = (distinct.max(1) * BITS_PER_KEY)
            .next_power_of_two()
            .max(256);
        let mut filter = Self {
            blocks: vec![[0u32; 8]; bits / 256],
        };
        for id in ids {
            filter.insert(id);
        }
        filter
    }

    fn insert(&mut self, id: &[u8]) {
        let hash = hash_id(id);
        let block = self.block_index(hash);
        let mask = block_mask(hash as u32);
        for (word, bit) in self.blocks[block].iter_mut().zip(mask) {
            *word |= bit;
        }
    }

    /// False only when no id equal to `id` was inserted.
    pub fn may_contain(&self, id: &[u8]) -> bool {
        let hash = hash_id(id);
        let mask = block_mask(hash as u32);
        self.blocks[self.block_index(hash)]
            .iter()
            .zip(mask)
            .all(|(word, bit)| word & bit != 0)
    }

    fn block_index(&self, hash: u64) -> usize {
        (((hash >> 32) * self.blocks.len() as u64) >> 32) as usize
    }

    pub fn memory_bytes(&self) -> usize {
        self.blocks.len() * 32
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.blocks.len() * 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for word in self.blocks.iter().flatten() {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// `None` for anything that is not a whole filter this code wrote.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let count = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = &rest[4..];
        if count == 0 || body.len() != count * 32 {
            return None;
        }
        let blocks = body
            .chunks_exact(32)
            .map(|block| {
                std::array::from_fn(|i| {
                    u32::from_le_bytes(block[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
                })
            })
            .collect();
        Some(Self { blocks })
    }

    /// Reads the filter written beside the Parquet file `parquet`, or, when it is missing or
    /// damaged (files written before filters existed, a crash while writing one), rebuilds
    /// it from the file's `trace_id` column and writes it again. For the node that owns the
    /// file. An error means the Parquet file itself could not be read: the caller
    /// quarantines it.
    pub fn load_or_rebuild(objects: &ObjectStorage, parquet: &ObjectPath) -> Result<Self> {
        let sidecar = sidecar_key(parquet);
        if let Some(filter) = objects
            .get(&sidecar)
            .ok()
            .flatten()
            .and_then(|bytes| Self::from_bytes(&bytes))
        {
            return Ok(filter);
        }
        let bytes = objects.get(parquet)?.ok_or_else(|| {
            Error::Storage(format!(
                "cannot build the trace id filter of {parquet}: missing"
            ))
        })?;
        let filter = Self::from_parquet(bytes).map_err(|e| {
            Error::Storage(format!(
                "cannot read {parquet} to build its trace id filter: {e}"
            ))
        })?;
        if let Err(e) = objects.put(&sidecar, Bytes::from(filter.to_bytes())) {
            tracing::warn!(file = %sidecar, error = %e, "cannot write trace id filter");
        }
        Ok(filter)
    }

    /// [`TraceIdFilter::load_or_rebuild`] for readers of another node's files: async, and
    /// never writes (a rebuilt filter is only returned).
    pub async fn load(store: &dyn ObjectStore, parquet: &ObjectPath) -> Result<Self> {
        if let Some(filter) = crate::object::get(store, &sidecar_key(parquet))
            .await?
            .and_then(|bytes| Self::from_bytes(&bytes))
        {
            return Ok(filter);
        }
        let bytes = crate::object::get(store, parquet).await?.ok_or_else(|| {
            Error::Storage(format!(
                "cannot build the trace id filter of {parquet}: missing"
            ))
        })?;
        tokio::task::spawn_blocking(move || Self::from_parquet(bytes))
            .await
            .map_err(|e| Error::Storage(format!("trace id filter task: {e}")))?
            .map_err(|e| Error::Storage(format!("cannot read {parquet}: {e}")))
    }

    /// Builds the filter from the bytes of a span file, from its `trace_id` column (sorted,
    /// so distinct ids are runs of equal neighbours).
    pub fn from_parquet(parquet: Bytes) -> Result<Self, crate::error::ReadError> {
        use arrow::array::{Array, AsArray};
        use parquet::arrow::ProjectionMask;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let builder = ParquetRecordBatchReaderBuilder::try_new(parquet)?;
        let index = builder.schema().index_of(weft_schemas::columns::TRACE_ID)?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let reader = builder.with_projection(mask).build()?;
        let mut ids: Vec<[u8; 16]> = Vec::new();
        for batch in reader {
            let batch = batch?;
            let column = batch.column(0).as_fixed_size_binary();
            for i in 0..column.len() {
                if column.is_null(i) {
                    continue;
                }
                if let Ok(id) = <[u8; 16]>::try_from(column.value(i))
                    && ids.last() != Some(&id)
                {
                    ids.push(id);
                }
            }
        }
        Ok(Self::build(ids.len(), ids.iter().map(|id| &id[..])))
    }
}

impl std::fmt::Debug for TraceIdFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceIdFilter({} bytes)", self.memory_bytes())
    }
}

/// `<file>.parquet` -> `<file>.tids`.
pub fn sidecar_key(parquet: &ObjectPath) -> ObjectPath {
    let mut parts: Vec<PathPart<'static>> = parquet
        .parts()
        .map(|p| PathPart::from(p.as_ref().to_owned()))
        .collect();
    if let Some(last) = parts.pop() {
        let name = last.as_ref();
        let stem = name.strip_suffix(".parquet").unwrap_or(name);
        parts.push(PathPart::from(format!("{stem}.tids")));
    }
    ObjectPath::from_iter(parts)
}

/// Trace ids are random in principle but not always in practice (tests, some SDKs, 64-bit
/// ids padded with zeros), so both halves are mixed.
fn hash_id(id: &[u8]) -> u64 {
    let mut halves = [0u64; 2];
    for (i, chunk) in id.chunks(8).take(2).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        halves[i] = u64::from_le_bytes(word);
    }
    splitmix64(halves[0] ^ splitmix64(halves[1]))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn block_mask(key: u32) -> [u32; 8] {
    std::array::from_fn(|i| 1u32 << (key.wrapping_mul(SALT[i]) >> 27))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn inserted_ids_are_found_and_false_positives_are_rare() {
        let inserted: Vec<[u8; 16]> = (0..50_000u64).map(id).collect();
        let filter = TraceIdFilter::build(inserted.len(), inserted.iter().map(|i| &i[..]));
        assert!(inserted.iter().all(|i| filter.may_contain(i)));
        let false_positives = (1_000_000..1_100_000u64)
            .filter(|n| filter.may_contain(&id(*n)))
            .count();
        // 10+ bits per key with 8 probes: well under 2% (it is ~0.5% for this size).
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100000"
        );
    }

    #[test]
    fn bytes_round_trip_and_damage_is_refused() {
        let filter = TraceIdFilter::build(3, [&id(1)[..], &id(2)[..], &id(3)[..]]);
        let bytes = filter.to_bytes();
        assert_eq!(TraceIdFilter::from_bytes(&bytes), Some(filter));
        assert_eq!(TraceIdFilter::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(TraceIdFilter::from_bytes(b"nope"), None);
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'X';
        assert_eq!(TraceIdFilter::from_bytes(&wrong_magic), None);
    }
}
