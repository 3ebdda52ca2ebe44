//! The target's binary, read from its file: symbols and tokio's version (`elf`), what the
//! code and read-only data say (`locations`), spawn sites named from the code
//! (`static_sites`, `spawn_ids`).

pub mod elf;
pub mod locations;
pub mod spawn_ids;
pub mod static_sites;

use std::path::Path;

use crate::error::{Error, Result};
use elf::BinaryInfo;
use locations::LocationTable;

/// The target's binary, with symbols from `--symbols` when given.
pub fn read_binary(
    exe: &Path,
    display: &str,
    symbols: Option<&Path>,
) -> Result<(BinaryInfo, LocationTable)> {
    // Each file is read once; its bytes serve both the symbol index and the location table.
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io_for(p, e));
    // The symbols are demangled once, by `BinaryInfo::parse`, and handed on.
    let data = read(exe)?;
    let bin = BinaryInfo::parse(exe, &data)?;
    let (mut bin, data) = match symbols {
        Some(sym) => {
            let sym_data = read(sym)?;
            let sym_bin = BinaryInfo::parse(sym, &sym_data)?;
            (
                bin.with_symbols_from(sym_bin, sym, Path::new(display))?,
                sym_data,
            )
        }
        None => (bin, data),
    };
    let functions = std::mem::take(&mut bin.text_symbols);
    Ok((bin, LocationTable::parse_with_functions(data, functions)))
}
