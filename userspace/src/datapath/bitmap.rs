//! A bitmap in a BPF array of u64 words that the program tests before a
//! dearer lookup (`TG_NTP_PORTS`, `TG_LEARNED_BITS`): bit `b` is bit
//! `b % 64` of word `b / 64`. The controller is its only writer, so it
//! keeps a copy of the words and writes only the words that change.

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData};

pub(super) struct Bitmap {
    pub(super) map: Array<MapData, u64>,
    /// What the map holds.
    pub(super) words: Vec<u64>,
    /// The map's name, for errors.
    name: &'static str,
}

impl Bitmap {
    /// The map `name` as it is, which a previous run may have left (pinned).
    pub(super) fn new(map: Array<MapData, u64>, name: &'static str) -> Result<Bitmap> {
        let words = (0..map.len())
            .map(|i| map.get(&i, 0).with_context(|| format!("read {name}")))
            .collect::<Result<_>>()?;
        Ok(Bitmap { map, words, name })
    }

    /// The word of `bit` and its mask in it.
    pub(super) fn place(bit: u32) -> (usize, u64) {
        ((bit >> 6) as usize, 1 << (bit & 63))
    }

    /// Sets `bit`.
    pub(super) fn set(&mut self, bit: u32) -> Result<()> {
        let (word, mask) = Bitmap::place(bit);
        if self.words[word] & mask == 0 {
            self.write(word, self.words[word] | mask)?;
        }
        Ok(())
    }

    /// Clears every bit but `bits` (it sets none).
    pub(super) fn keep_only(&mut self, bits: impl IntoIterator<Item = u32>) -> Result<()> {
        let mut needed = vec![0u64; self.words.len()];
        for bit in bits {
            let (word, mask) = Bitmap::place(bit);
            needed[word] |= mask;
        }
        for (word, needed) in needed.into_iter().enumerate() {
            let kept = self.words[word] & needed;
            if kept != self.words[word] {
                self.write(word, kept)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, word: usize, value: u64) -> Result<()> {
        self.map
            .set(word as u32, value, 0)
            .with_context(|| format!("write {}", self.name))?;
        self.words[word] = value;
        Ok(())
    }
}
