//! [`Input`]: choices read off a fuzzer's bytes.
//!
//! The checks decode their inputs with this rather than the `arbitrary` crate so that the
//! regression test in `messenger/tests` replays a saved input exactly as the fuzzer ran it,
//! without a dependency the messenger crate does not have.

/// Reads choices off the front of a fuzzer's input. Past its end every read is zero or empty,
/// so every input, however short, means something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes off the front (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// The next `N` bytes as an array, zero-padded past the end.
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let taken = self.take(N);
        out[..taken.len()].copy_from_slice(taken);
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A number in `0..n` (0 if `n` is 0), from as few bytes as `n` needs.
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 => 0,
            1..=0x100 => usize::from(self.u8()) % n,
            0x101..=0x1_0000 => usize::from(self.u16()) % n,
            _ => self.u32() as usize % n,
        }
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// A length byte, then up to that many bytes (at most `max`).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u8()).min(max);
        self.take(len)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}
