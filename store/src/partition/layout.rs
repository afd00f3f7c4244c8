//! Checks a Parquet footer's byte layout before any reader trusts it: every column chunk inside
//! the file, every page of the offset index inside its chunk, rows counted consistently.
//!
//! parquet 59 slices buffers by these numbers without checking them (`ColumnChunkMetaData::
//! byte_range` asserts, the in-memory row group slices a page past its chunk's end), so a damaged
//! or hostile footer would panic the reader; found by `fuzz/parquet_open`. A footer that fails
//! here is refused as a whole with the reason, like any other corrupt file.

use parquet::file::metadata::ParquetMetaData;

/// `Err(reason)` when `m`, the footer of a file of `file_size` bytes, points outside the file or
/// outside its own column chunks.
pub(crate) fn check(m: &ParquetMetaData, file_size: u64) -> Result<(), String> {
    let size = i128::from(file_size);
    let groups = m.row_groups();
    let offsets = m.offset_index();
    if let Some(oi) = offsets
        && oi.len() != groups.len()
    {
        return Err(format!(
            "offset index lists {} row groups, the footer {}",
            oi.len(),
            groups.len()
        ));
    }
    let mut total_rows: i128 = 0;
    for (r, rg) in groups.iter().enumerate() {
        let rows = rg.num_rows();
        if rows < 0 {
            return Err(format!("row group {r}: negative row count {rows}"));
        }
        total_rows += i128::from(rows);
        let pages_of = offsets.and_then(|oi| oi.get(r));
        if let Some(p) = pages_of
            && p.len() != rg.columns().len()
        {
            return Err(format!(
                "row group {r}: offset index lists {} columns, the footer {}",
                p.len(),
                rg.columns().len()
            ));
        }
        for (c, col) in rg.columns().iter().enumerate() {
            let data = col.data_page_offset();
            let start = col.dictionary_page_offset().unwrap_or(data);
            let len = col.compressed_size();
            let end = i128::from(start) + i128::from(len);
            if start < 0 || len < 0 || end > size || data < start || i128::from(data) > end {
                return Err(format!(
                    "row group {r} column {c}: chunk at {start}+{len} (data page at {data}) \
                     lies outside the file of {file_size} bytes"
                ));
            }
            let Some(pages) = pages_of.and_then(|p| p.get(c)) else {
                continue;
            };
            let mut prev_row: i64 = -1;
            for (i, p) in pages.page_locations().iter().enumerate() {
                let p_end = i128::from(p.offset) + i128::from(p.compressed_page_size);
                if p.offset < start || p.compressed_page_size < 0 || p_end > end {
                    return Err(format!(
                        "row group {r} column {c} page {i}: at {}+{} outside its chunk \
                         {start}+{len}",
                        p.offset, p.compressed_page_size
                    ));
                }
                let first = p.first_row_index;
                if first <= prev_row || (i == 0 && first != 0) || (rows > 0 && first >= rows) {
                    return Err(format!(
                        "row group {r} column {c} page {i}: first row {first} out of order \
                         (row group of {rows} rows)"
                    ));
                }
                prev_row = first;
            }
        }
    }
    if total_rows != i128::from(m.file_metadata().num_rows()) {
        return Err(format!(
            "row groups hold {total_rows} rows, the footer says {}",
            m.file_metadata().num_rows()
        ));
    }
    Ok(())
}
