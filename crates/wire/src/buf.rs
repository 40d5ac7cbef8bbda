//! Packet buffers with headroom and tailroom.
//!
//! A packet lives in one buffer for its whole trip through the pipeline.
//! Encapsulation prepends headers into the headroom and appends trailers into
//! the tailroom, so ESP and tunnel headers never cause a copy of the payload
//! and never allocate.

/// Headroom reserved in front of a fresh packet: enough for an outer IPv6
/// header, a UDP encapsulation header, an ESP header with a 16-byte IV, and
/// a second layer of the same (nested tunnels).
pub const DEFAULT_HEADROOM: usize = 192;

/// Buffer capacity used by [`PacketBuf::new`]: a 9000-byte jumbo frame plus
/// headroom and tailroom for encapsulation.
pub const DEFAULT_CAPACITY: usize = 9600;

/// Errors of buffer manipulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BufError {
    /// Not enough headroom to prepend the requested bytes.
    NoHeadroom,
    /// Not enough tailroom to append the requested bytes.
    NoTailroom,
    /// Tried to remove more bytes than the packet holds.
    TooShort,
}

impl core::fmt::Display for BufError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BufError::NoHeadroom => "not enough headroom in the packet buffer",
            BufError::NoTailroom => "not enough tailroom in the packet buffer",
            BufError::TooShort => "packet shorter than the bytes to remove",
        })
    }
}

impl std::error::Error for BufError {}

/// One packet: the bytes `storage[start..end]`, with the space before
/// `start` (headroom) and after `end` (tailroom) free for encapsulation.
#[derive(Clone)]
pub struct PacketBuf {
    storage: Box<[u8]>,
    start: usize,
    end: usize,
}

impl core::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("len", &self.len())
            .field("headroom", &self.headroom())
            .field("tailroom", &self.tailroom())
            .finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    /// An empty buffer of [`DEFAULT_CAPACITY`] with [`DEFAULT_HEADROOM`].
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY, DEFAULT_HEADROOM)
    }

    /// An empty buffer of `capacity` bytes whose data starts at `headroom`.
    pub fn with_capacity(capacity: usize, headroom: usize) -> Self {
        let headroom = headroom.min(capacity);
        PacketBuf {
            storage: vec![0u8; capacity].into_boxed_slice(),
            start: headroom,
            end: headroom,
        }
    }

    /// A buffer holding a copy of `data` with the default headroom.
    pub fn from_slice(data: &[u8]) -> Self {
        let capacity = DEFAULT_CAPACITY.max(data.len() + 2 * DEFAULT_HEADROOM);
        let mut buf = Self::with_capacity(capacity, DEFAULT_HEADROOM);
        buf.storage[buf.start..buf.start + data.len()].copy_from_slice(data);
        buf.end = buf.start + data.len();
        buf
    }

    /// Replaces the contents with `data`, resetting the headroom to the
    /// default. Fails if the buffer is too small.
    pub fn set(&mut self, data: &[u8]) -> Result<(), BufError> {
        let headroom = DEFAULT_HEADROOM.min(self.storage.len().saturating_sub(data.len()));
        if headroom + data.len() > self.storage.len() {
            return Err(BufError::NoTailroom);
        }
        self.start = headroom;
        self.end = headroom + data.len();
        self.storage[self.start..self.end].copy_from_slice(data);
        Ok(())
    }

    /// Empties the buffer and makes it `len` bytes long, for writing a
    /// packet in place. The headroom is the default one when the capacity
    /// allows and smaller otherwise. The returned bytes hold whatever the
    /// storage held before: the caller writes all of them.
    pub fn reset_to_len(&mut self, len: usize) -> Result<&mut [u8], BufError> {
        if len > self.storage.len() {
            return Err(BufError::NoTailroom);
        }
        self.start = DEFAULT_HEADROOM.min(self.storage.len() - len);
        self.end = self.start + len;
        Ok(&mut self.storage[self.start..self.end])
    }

    /// Empties the buffer and restores the default headroom, for reuse.
    pub fn reset(&mut self) {
        self.start = DEFAULT_HEADROOM.min(self.storage.len());
        self.end = self.start;
    }

    /// Bytes of packet data.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the packet is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Free bytes in front of the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Free bytes after the packet.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.storage.len() - self.end
    }

    /// Total capacity of the underlying storage.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }

    /// The packet bytes, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }

    /// Grows the packet at the front by `n` bytes and returns them (their
    /// content is whatever the headroom held).
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.start {
            return Err(BufError::NoHeadroom);
        }
        self.start -= n;
        Ok(&mut self.storage[self.start..self.start + n])
    }

    /// Grows the packet at the back by `n` bytes and returns them.
    #[inline]
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], BufError> {
        if n > self.tailroom() {
            return Err(BufError::NoTailroom);
        }
        let old = self.end;
        self.end += n;
        Ok(&mut self.storage[old..self.end])
    }

    /// Removes `n` bytes from the front.
    #[inline]
    pub fn trim_front(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.len() {
            return Err(BufError::TooShort);
        }
        self.start += n;
        Ok(())
    }

    /// Removes `n` bytes from the back.
    #[inline]
    pub fn trim_back(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.len() {
            return Err(BufError::TooShort);
        }
        self.end -= n;
        Ok(())
    }

    /// Shortens the packet to `len` bytes (no-op if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }

    /// Opens a gap of `n` bytes at offset `at` by moving the first `at`
    /// bytes of the packet forward into the headroom (used to insert a
    /// header after the IP header in transport mode). Returns the gap.
    pub fn insert_gap(&mut self, at: usize, n: usize) -> Result<&mut [u8], BufError> {
        if at > self.len() {
            return Err(BufError::TooShort);
        }
        if n > self.start {
            return Err(BufError::NoHeadroom);
        }
        let old = self.start;
        self.storage.copy_within(old..old + at, old - n);
        self.start -= n;
        Ok(&mut self.storage[self.start + at..self.start + at + n])
    }

    /// Removes `n` bytes at offset `at` by moving the first `at` bytes of
    /// the packet backwards (the inverse of [`PacketBuf::insert_gap`]).
    pub fn remove_range(&mut self, at: usize, n: usize) -> Result<(), BufError> {
        if at + n > self.len() {
            return Err(BufError::TooShort);
        }
        let old = self.start;
        self.storage.copy_within(old..old + at, old + n);
        self.start += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_append_trim() {
        let mut b = PacketBuf::from_slice(&[1, 2, 3]);
        b.prepend(2).unwrap().copy_from_slice(&[9, 8]);
        b.append(1).unwrap()[0] = 7;
        assert_eq!(b.data(), &[9, 8, 1, 2, 3, 7]);
        b.trim_front(2).unwrap();
        b.trim_back(1).unwrap();
        assert_eq!(b.data(), &[1, 2, 3]);
        assert_eq!(b.trim_back(4), Err(BufError::TooShort));
    }

    #[test]
    fn gap_insert_and_remove_round_trip() {
        let mut b = PacketBuf::from_slice(&[1, 2, 3, 4, 5]);
        b.insert_gap(2, 3)
            .unwrap()
            .copy_from_slice(&[0xa, 0xb, 0xc]);
        assert_eq!(b.data(), &[1, 2, 0xa, 0xb, 0xc, 3, 4, 5]);
        b.remove_range(2, 3).unwrap();
        assert_eq!(b.data(), &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn reset_to_len_shrinks_headroom_only_when_needed() {
        let mut b = PacketBuf::with_capacity(1000, 0);
        assert_eq!(b.reset_to_len(100).unwrap().len(), 100);
        assert_eq!(b.headroom(), DEFAULT_HEADROOM);
        assert_eq!(b.reset_to_len(1000).unwrap().len(), 1000);
        assert_eq!(b.headroom(), 0);
        assert_eq!(b.reset_to_len(1001).unwrap_err(), BufError::NoTailroom);
    }

    #[test]
    fn headroom_exhaustion_is_an_error() {
        let mut b = PacketBuf::with_capacity(16, 4);
        assert!(b.prepend(4).is_ok());
        assert_eq!(b.prepend(1).unwrap_err(), BufError::NoHeadroom);
        assert_eq!(b.append(13).unwrap_err(), BufError::NoTailroom);
    }
}
