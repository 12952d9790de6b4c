//! `lake._needles`: the needle index's per-token work, where a body costs a fraction of a microsecond.
//!
//! lake/needle_index.py owns the rules (what a token is, which entries a token and a needle give, how an
//! entry's digest places its bits) and the catalog's format; this module applies the same rules to every
//! body of a file. Python computes a needle's positions with hashlib, and the tests hold the two to the
//! same answers.

use md5::{Digest, Md5};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustc_hash::FxHashSet;

const BLOCK_BITS: u64 = 512;
const BLOCK_BYTES: usize = (BLOCK_BITS / 8) as usize;

/// lake.needle_index.TOKEN_CHARS, as a byte table: every other byte (a UTF-8 sequence's too) separates.
const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
}
static TOKEN: [bool; 256] = token_table();

/// The tokens of `body`: maximal runs of token bytes.
fn tokens(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| !TOKEN[b as usize]).filter(|t| !t.is_empty())
}

/// The entries of one token: `W` + the token, and when it is at least `edge` long, `P` + its first and
/// `S` + its last `edge` bytes (tokens are ASCII, so bytes are characters).
fn entries(token: &[u8], edge: usize, mut f: impl FnMut(u8, &[u8])) {
    f(b'W', token);
    if token.len() >= edge {
        f(b'P', &token[..edge]);
        f(b'S', &token[token.len() - edge..]);
    }
}

/// The two halves of MD5(index key ‖ entry), read little-endian (lake.needle_index.position).
fn digest(keyed: &Md5, kind: u8, text: &[u8]) -> (u64, u64) {
    let d = keyed.clone().chain_update([kind]).chain_update(text).finalize();
    let (upper, lower) = d.split_at(8);
    (u64::from_le_bytes(upper.try_into().unwrap()), u64::from_le_bytes(lower.try_into().unwrap()))
}

/// Sets an entry's bits in its block of one row group: bit `b` is the byte `b / 8`'s bit from the top.
fn set(rows: &mut [Vec<u8>], group: usize, (upper, lower): (u64, u64), hashes: u32) {
    let row = &mut rows[(upper % rows.len() as u64) as usize][group * BLOCK_BYTES..(group + 1) * BLOCK_BYTES];
    for i in 0..hashes {
        let bit = ((lower >> (9 * i)) & (BLOCK_BITS - 1)) as usize;
        row[bit / 8] |= 0x80 >> (bit % 8);
    }
}

/// Every row group's entry digests, fed a file's bodies batch by batch. Rows come in file order (a scan
/// of one file keeps it), so only the current row group's distinct tokens are held, and each is hashed
/// once per row group; a row of an earlier row group (out of order) has its entries hashed as they come.
struct Groups {
    groups: usize,                    // the file's row groups: a row past them is refused
    rows_per_group: u64,
    edge: usize,
    keyed: Md5,                       // MD5 having absorbed the index key
    current: usize,
    seen: FxHashSet<Box<[u8]>>,       // distinct tokens of the current row group
    digests: Vec<Vec<(u64, u64)>>,    // per row group; sorted and de-duplicated by `done`
}

impl Groups {
    fn new(groups: usize, rows_per_group: u64, edge: usize, key_hex: &[u8]) -> Self {
        Groups { groups, rows_per_group, edge, keyed: Md5::new().chain_update(key_hex), current: 0,
                 seen: FxHashSet::default(), digests: Vec::new() }
    }

    /// False, adding nothing, for a row that lies past the file's row groups.
    fn add(&mut self, row: u64, body: &[u8]) -> bool {
        let group = row / self.rows_per_group;
        if group >= self.groups as u64 {
            return false;
        }
        let group = group as usize;
        if group >= self.digests.len() {
            self.digests.resize_with(group + 1, Vec::new);
        }
        if group > self.current {
            self.close();
            self.current = group;
        } else if group < self.current {
            let (keyed, edge, out) = (&self.keyed, self.edge, &mut self.digests[group]);
            for t in tokens(body) {
                entries(t, edge, |kind, text| out.push(digest(keyed, kind, text)));
            }
            return true;
        }
        for t in tokens(body) {
            if !self.seen.contains(t) {
                self.seen.insert(t.into());
            }
        }
        true
    }

    /// The current row group's tokens, hashed into its digests.
    fn close(&mut self) {
        if self.seen.is_empty() {
            return;
        }
        let (keyed, edge) = (&self.keyed, self.edge);
        let out = &mut self.digests[self.current];
        for t in self.seen.drain() {
            entries(&t, edge, |kind, text| out.push(digest(keyed, kind, text)));
        }
    }

    /// Every row group's distinct entry digests, sorted.
    fn done(mut self) -> Vec<Vec<(u64, u64)>> {
        self.close();
        for d in &mut self.digests {
            d.sort_unstable();
            d.dedup();
        }
        self.digests
    }
}

/// Block `b` of every row group, in row group order, for `groups` row groups of `blocks` blocks each,
/// `blocks` chosen by `blocks_for` from the fullest row group's count of entries.
fn filters(digests: &[Vec<(u64, u64)>], groups: usize, hashes: u32, blocks_for: impl Fn(usize) -> usize)
           -> Vec<Vec<u8>> {
    debug_assert!(digests.len() <= groups);
    let fullest = digests.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = vec![vec![0u8; groups * BLOCK_BYTES]; blocks_for(fullest).max(1)];
    for (group, entries) in digests.iter().enumerate() {
        for &d in entries {
            set(&mut rows, group, d, hashes);
        }
    }
    rows
}

/// A contiguous view of a pyarrow Buffer's bytes (exported as signed bytes), held while it is read.
fn bytes_of(buf: &Option<PyBuffer<i8>>) -> PyResult<&[u8]> {
    Ok(match buf {
        None => &[],
        Some(b) if b.is_c_contiguous() => {
            // SAFETY: the buffer is C-contiguous, of len_bytes bytes, and kept alive (and so not freed or
            // resized: the exporter holds it still) by the PyBuffer borrowed for as long as the slice.
            unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) }
        }
        Some(_) => return Err(PyValueError::new_err("a needle index buffer must be contiguous")),
    })
}

fn offsets(raw: &[u8], large: bool, i: usize) -> usize {
    if large {
        i64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap()) as usize
    } else {
        i32::from_le_bytes(raw[i * 4..i * 4 + 4].try_into().unwrap()) as usize
    }
}

/// `n` elements of `width` bytes from element `offset` fit in `len` bytes, without overflow on the way.
fn fits(len: usize, offset: usize, n: usize, width: usize) -> bool {
    offset.checked_add(n).and_then(|e| e.checked_mul(width)).is_some_and(|e| e <= len)
}

/// More row groups than a file of 2^16-row groups holding 2^40 rows: a caller's mistake, refused before any
/// allocation of their filters (64 bytes per row group and block).
const MAX_GROUPS: usize = 1 << 24;

/// A file's needle index in the making: `add` every batch of (file_row_number, body), then `finish`.
#[pyclass(module = "lake._needles")]
struct Builder {
    groups: Option<Groups>,   // taken by finish
}

#[pymethods]
impl Builder {
    /// For a file of `groups` row groups of `rows_per_group` rows; `key_hex`: the file's index key
    /// (lake.needle_index.index_key), which every entry's digest starts with.
    #[new]
    #[pyo3(signature = (*, groups, rows_per_group, edge, key_hex))]
    fn new(groups: usize, rows_per_group: u64, edge: usize, key_hex: &str) -> PyResult<Self> {
        if groups == 0 || rows_per_group == 0 || edge == 0 {
            return Err(PyValueError::new_err("groups, rows_per_group and edge must be positive"));
        }
        if groups > MAX_GROUPS {
            return Err(PyValueError::new_err(format!("a needle index holds at most {MAX_GROUPS} row groups")));
        }
        Ok(Builder { groups: Some(Groups::new(groups, rows_per_group, edge, key_hex.as_bytes())) })
    }

    /// One Arrow batch without nulls of `length` rows: the int64 row numbers' data buffer from element
    /// `rows_offset`, and the body column's offsets (int32, or int64 when `large`) and data buffers from
    /// element `body_offset`. A row number outside the file's row groups (negative, or past them) is refused,
    /// with the rows before it added.
    #[pyo3(signature = (rows, rows_offset, body_offsets, body_data, body_offset, length, large))]
    #[allow(clippy::too_many_arguments)]
    fn add(&mut self, py: Python<'_>, rows: Option<PyBuffer<i8>>, rows_offset: usize,
           body_offsets: Option<PyBuffer<i8>>, body_data: Option<PyBuffer<i8>>, body_offset: usize,
           length: usize, large: bool) -> PyResult<()> {
        let (rows, ends, data) = (bytes_of(&rows)?, bytes_of(&body_offsets)?, bytes_of(&body_data)?);
        let width = if large { 8 } else { 4 };
        if length == 0 {
            return Ok(());
        }
        if !fits(rows.len(), rows_offset, length, 8) || !fits(ends.len(), body_offset, length + 1, width) {
            return Err(PyValueError::new_err("a needle index batch is shorter than its length"));
        }
        let last = offsets(ends, large, body_offset + length);
        if last > data.len() || offsets(ends, large, body_offset) > last {
            return Err(PyValueError::new_err("a needle index batch's offsets point past its data"));
        }
        let groups = self.groups.as_mut().ok_or_else(|| PyValueError::new_err("the needle index is finished"))?;
        let added = py.allow_threads(|| {
            (0..length).all(|i| {
                let r = (rows_offset + i) * 8;
                let row = i64::from_le_bytes(rows[r..r + 8].try_into().unwrap());
                // Arrow's offsets ascend; clamped anyway, so a malformed batch cannot read out of bounds
                let end = offsets(ends, large, body_offset + i + 1).min(data.len());
                row >= 0 && groups.add(row as u64, &data[offsets(ends, large, body_offset + i).min(end)..end])
            })
        });
        if !added {
            return Err(PyValueError::new_err("a needle index row number lies outside the file's row groups"));
        }
        Ok(())
    }

    /// (blocks per row group, block 0's row, block 1's row, …): each row is that block of row group 0, 1, …,
    /// 64 bytes each; `bits_per_entry` sizes the blocks from the fullest row group and `hashes` bits are set
    /// per entry.
    #[pyo3(signature = (*, bits_per_entry, hashes))]
    fn finish<'py>(&mut self, py: Python<'py>, bits_per_entry: usize, hashes: u32)
                   -> PyResult<(usize, Vec<Bound<'py, PyBytes>>)> {
        if hashes == 0 || 9 * hashes > 64 {
            return Err(PyValueError::new_err("a needle index entry sets 1 to 7 bits"));
        }
        if bits_per_entry == 0 || bits_per_entry > BLOCK_BITS as usize {
            return Err(PyValueError::new_err("a needle index entry takes 1 to 512 bits"));
        }
        let built = self.groups.take().ok_or_else(|| PyValueError::new_err("the needle index is finished"))?;
        let groups = built.groups;
        let rows = py.allow_threads(|| {
            filters(&built.done(), groups, hashes, |n| (n * bits_per_entry).div_ceil(BLOCK_BITS as usize))
        });
        Ok((rows.len(), rows.iter().map(|r| PyBytes::new(py, r)).collect()))
    }
}

#[pymodule]
fn _needles(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Builder>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_ascii_word_runs() {
        let got: Vec<&[u8]> = tokens("GET /api/v1/users/42?x=ä_b  id=a1_B2".as_bytes()).collect();
        assert_eq!(got, [&b"GET"[..], b"api", b"v1", b"users", b"42", b"x", b"_b", b"id", b"a1_B2"]);
    }

    #[test]
    fn long_tokens_give_edges() {
        let mut got = Vec::new();
        entries(b"0123456789", 8, |k, t| got.push((k, t.to_vec())));
        assert_eq!(got, [(b'W', b"0123456789".to_vec()), (b'P', b"01234567".to_vec()), (b'S', b"23456789".to_vec())]);
        got.clear();
        entries(b"short", 8, |k, t| got.push((k, t.to_vec())));
        assert_eq!(got, [(b'W', b"short".to_vec())]);
    }

    #[test]
    fn digest_is_md5_of_key_and_entry() {
        let keyed = Md5::new().chain_update(b"k");
        let whole = Md5::digest(b"kWx");
        let (u, l) = digest(&keyed, b'W', b"x");
        assert_eq!(u.to_le_bytes(), whole[..8]);
        assert_eq!(l.to_le_bytes(), whole[8..]);
    }

    #[test]
    fn every_entry_sets_its_bits_in_its_row_group_only() {
        let mut g = Groups::new(3, 2, 8, b"key");
        g.add(0, b"alpha beta");
        g.add(3, b"gamma");
        let rows = filters(&g.done(), 3, 7, |n| n.div_ceil(2));
        assert_eq!(rows.len(), 1);
        for (group, want) in [(0, true), (1, true), (2, false)] {
            assert_eq!(rows[0][group * 64..(group + 1) * 64].iter().any(|&b| b != 0), want);
        }
        let (_, l) = digest(&Md5::new().chain_update(b"key"), b'W', b"gamma");
        for i in 0..7 {
            let bit = ((l >> (9 * i)) & 511) as usize;
            assert_ne!(rows[0][64 + bit / 8] & (0x80 >> (bit % 8)), 0);
        }
    }

    #[test]
    fn rows_out_of_order_give_the_same_digests() {
        let bodies: [&[u8]; 6] = [b"a b", b"c a", b"longtoken_1 x", b"a", b"y longtoken_1", b"z"];
        let mut ordered = Groups::new(3, 2, 8, b"k");
        for (i, b) in bodies.iter().enumerate() {
            ordered.add(i as u64, b);
        }
        let mut shuffled = Groups::new(3, 2, 8, b"k");
        for i in [4, 0, 5, 2, 1, 3] {
            shuffled.add(i as u64, bodies[i]);
        }
        let want = ordered.done();
        assert_eq!(want.iter().map(Vec::len).collect::<Vec<_>>(), [3, 5, 5]);
        assert_eq!(shuffled.done(), want);
    }

    #[test]
    fn a_row_past_the_files_row_groups_adds_nothing() {
        let mut g = Groups::new(2, 2, 8, b"k");
        assert!(g.add(3, b"a"));
        assert!(!g.add(4, b"b"));
        assert!(!g.add(u64::MAX, b"c"));
        assert_eq!(g.done().iter().map(Vec::len).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn fits_refuses_what_would_overflow() {
        assert!(fits(16, 1, 1, 8));
        assert!(!fits(16, 1, 2, 8));
        assert!(!fits(usize::MAX, usize::MAX, 1, 8));
        assert!(!fits(usize::MAX, 1, usize::MAX / 4, 8));
    }
}
