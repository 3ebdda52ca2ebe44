//! The target's binary, read from its file: symbols and tokio's version (`elf`), what the
//! code and read-only data say (`locations`), spawn sites named from the code
//! (`static_sites`, `spawn_ids`); its type information, wherever it is (`async_types`,
//! `debuginfod`).

pub mod async_types;
pub mod debuginfod;
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
    // Each file is parsed once; its symbols are demangled once, by `BinaryInfo`, and
    // handed to the location table (of the file that has them: `--symbols`, if given).
    let data = read(exe)?;
    let file = elf::open(exe, &data)?;
    let bin = BinaryInfo::from_object(exe, &data, &file)?;
    match symbols {
        None => {
            let (bin, table) = with_table(bin, &file);
            drop(file);
            Ok((bin, table.with_data(data)))
        }
        Some(sym) => {
            drop(file);
            let sym_data = read(sym)?;
            let sym_file = elf::open(sym, &sym_data)?;
            let sym_bin = BinaryInfo::from_object(sym, &sym_data, &sym_file)?;
            let bin = bin.with_symbols_from(sym_bin, sym, Path::new(display))?;
            let (bin, table) = with_table(bin, &sym_file);
            drop(sym_file);
            Ok((bin, table.with_data(sym_data)))
        }
    }
}

/// The location table of `file`, from the symbols `bin` demangled.
fn with_table(mut bin: BinaryInfo, file: &object::File) -> (BinaryInfo, LocationTable) {
    let functions = std::mem::take(&mut bin.text_symbols);
    (bin, LocationTable::from_object(file, Some(functions)))
}
