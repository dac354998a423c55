//! Reads a provider file: a path or `-` (standard input), plain or gzip
//! (recognised by its magic bytes, not its name, so `curl | tollgate lists
//! import aws -` works either way), bounded before and after decompression.

use std::{
    fs::File,
    io::{self, Read},
    path::Path,
};

use flate2::read::MultiGzDecoder;

/// Bytes a provider file may take, compressed or not: the largest real one
/// (AWS, all services) is about 2 MB; the policy loader's per-file limit is
/// the same 64 MiB.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The file's bytes, decompressed.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    if path == Path::new("-") {
        return read_from(io::stdin().lock(), MAX_INPUT_BYTES);
    }
    // A FIFO is fine (`<(curl ...)`): it is read to its end like a file.
    let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    read_from(file, MAX_INPUT_BYTES)
}

/// Reads `source` to its end, decompressing gzip, within `limit` bytes.
pub fn read_from(source: impl Read, limit: u64) -> Result<Vec<u8>, String> {
    let raw = bounded(source, limit, "")?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    bounded(MultiGzDecoder::new(raw.as_slice()), limit, " decompressed")
        .map_err(|e| format!("gzip: {e}"))
}

fn bounded(source: impl Read, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    source
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "more than {limit} bytes{what}: not a provider's range file"
        ));
    }
    Ok(bytes)
}
