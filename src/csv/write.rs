//! Writing the result CSV (spec §4).

use std::borrow::Cow;

use ::csv::{Terminator, WriterBuilder};

/// Name of the column added after the input columns.
const OUTPUT_URLS_COLUMN: &str = "Output Image Urls";
/// Name of the column added after it when any image of the request failed.
const ERRORS_COLUMN: &str = "Errors";

/// One row of the output: the stored cells plus per-position outcomes.
/// Borrowed so the caller can stream rows from storage without copying.
pub struct OutputRow<'a> {
    /// Every input cell in header order (the URLs cell already joined), as in
    /// [`super::ProductRow::cells`].
    pub cells: &'a [String],
    /// One outcome per input URL, in the same order, so output positions
    /// line up with input positions.
    pub outputs: &'a [ImageOutcome],
}

/// What became of one input image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageOutcome {
    /// Processed and stored; the URL where the output image can be fetched.
    Stored(String),
    /// Could not be processed; a short reason such as `HTTP 404`.
    Failed(String),
    /// Not finished (yet): an empty slot, and not listed as an error.
    Pending,
}

/// Why the output CSV could not be written. Only writer-side problems: the
/// input was validated when it was parsed.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// A row does not have one cell per header column: a caller bug that
    /// would otherwise shift every later column.
    #[error("output row {row} has {found} cells, the header has {expected}")]
    RowLength {
        /// 0-based index of the offending row.
        row: usize,
        /// Number of header columns.
        expected: usize,
        /// Number of cells in the row.
        found: usize,
    },
    /// The csv writer failed.
    #[error("writing the output CSV failed: {0}")]
    Csv(#[from] ::csv::Error),
    /// Flushing the writer into the buffer failed.
    #[error("flushing the output CSV failed: {0}")]
    Flush(#[source] std::io::Error),
}

/// Writes the output CSV (header + rows) into a `Vec<u8>`: the input columns
/// in their order, then `Output Image Urls`, then `Errors` when `with_errors`
/// (set it when any image of the whole request failed, so every row has the
/// column). Every cell goes through [`sanitize_cell`]; lines end with `\n`.
/// [`OutputWriter`] writes the same bytes a part at a time.
pub fn write_output<'a>(
    header: &[String],
    rows: impl IntoIterator<Item = OutputRow<'a>>,
    with_errors: bool,
) -> Result<Vec<u8>, CsvError> {
    let mut writer = OutputWriter::new(header, with_errors, false)?;
    for row in rows {
        writer.write_row(&row)?;
    }
    writer.finish()
}

/// The output CSV written a part at a time, so a 100,000-row request's CSV never
/// sits in memory whole: write rows, [`Self::take`] what is written so far and send
/// it on, then [`Self::finish`] for the rest. The bytes are those of
/// [`write_output`] for the same rows.
pub struct OutputWriter {
    writer: ::csv::Writer<Vec<u8>>,
    columns: usize,
    with_errors: bool,
    rows: usize,
}

impl std::fmt::Debug for OutputWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputWriter")
            .field("columns", &self.columns)
            .field("with_errors", &self.with_errors)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl OutputWriter {
    /// Starts the CSV with its header line (see [`write_output`] for the columns),
    /// after a UTF-8 byte order mark when `bom` (the upload had one: a spreadsheet
    /// that wrote "CSV UTF-8" reads a file without one in its legacy code page).
    pub fn new(header: &[String], with_errors: bool, bom: bool) -> Result<Self, CsvError> {
        let start = if bom { "\u{feff}".as_bytes() } else { b"" };
        let mut writer = csv_writer(start.to_vec());
        for name in header {
            writer.write_field(sanitize_cell(name).as_bytes())?;
        }
        writer.write_field(OUTPUT_URLS_COLUMN)?;
        if with_errors {
            writer.write_field(ERRORS_COLUMN)?;
        }
        writer.write_record(None::<&[u8]>)?;
        Ok(Self {
            writer,
            columns: header.len(),
            with_errors,
            rows: 0,
        })
    }

    /// Appends one row.
    pub fn write_row(&mut self, row: &OutputRow<'_>) -> Result<(), CsvError> {
        if row.cells.len() != self.columns {
            return Err(CsvError::RowLength {
                row: self.rows,
                expected: self.columns,
                found: row.cells.len(),
            });
        }
        let writer = &mut self.writer;
        for cell in row.cells {
            writer.write_field(sanitize_cell(cell).as_bytes())?;
        }
        let outputs = row
            .outputs
            .iter()
            .map(|outcome| match outcome {
                ImageOutcome::Stored(url) => url.as_str(),
                ImageOutcome::Failed(_) | ImageOutcome::Pending => "",
            })
            .collect::<Vec<_>>()
            .join(",");
        writer.write_field(sanitize_cell(&outputs).as_bytes())?;
        if self.with_errors {
            let errors = row
                .outputs
                .iter()
                .enumerate()
                .filter_map(|(i, outcome)| match outcome {
                    ImageOutcome::Failed(error) => Some(format!("{}: {error}", i + 1)),
                    ImageOutcome::Stored(_) | ImageOutcome::Pending => None,
                })
                .collect::<Vec<_>>()
                .join("; ");
            writer.write_field(sanitize_cell(&errors).as_bytes())?;
        }
        writer.write_record(None::<&[u8]>)?;
        self.rows += 1;
        Ok(())
    }

    /// The bytes written since the last call, whole lines only.
    pub fn take(&mut self) -> Result<Vec<u8>, CsvError> {
        // The csv writer lends no `&mut` to its buffer: hand it over and start a new
        // one (it keeps no state between records that shows in the bytes).
        std::mem::replace(&mut self.writer, csv_writer(Vec::new()))
            .into_inner()
            .map_err(|e| CsvError::Flush(e.into_error()))
    }

    /// The bytes written since the last [`Self::take`]; the CSV is complete.
    pub fn finish(self) -> Result<Vec<u8>, CsvError> {
        self.writer
            .into_inner()
            .map_err(|e| CsvError::Flush(e.into_error()))
    }
}

/// The output's csv writer, appending to `start`: `\n` line ends, quoting only where
/// needed.
fn csv_writer(start: Vec<u8>) -> ::csv::Writer<Vec<u8>> {
    WriterBuilder::new()
        .terminator(Terminator::Any(b'\n'))
        .from_writer(start)
}

/// The spreadsheet-formula guard, exposed for reuse: a cell whose first
/// character makes Excel or Sheets evaluate it (`=`, `+`, `-`, `@`, tab, CR)
/// gets a leading `'`, so a merchant opening the result never runs a formula
/// smuggled in through a CSV or an error message.
pub fn sanitize_cell(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use super::super::{CsvLimits, ParsedCsv, parse};
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn rows_in_order_with_empty_slots_and_errors() {
        let head = header(&["Serial Number", "Product Name", "Input Image Urls"]);
        let cells1 = header(&["1", "SKU1", "http://x/1.jpg,http://x/2.jpg,http://x/3.jpg"]);
        let cells2 = header(&["2", "SKU2", "http://x/4.jpg"]);
        let out1 = [
            ImageOutcome::Stored("https://o/1.jpg".into()),
            ImageOutcome::Failed("HTTP 404".into()),
            ImageOutcome::Stored("https://o/3.jpg".into()),
        ];
        let out2 = [ImageOutcome::Pending];
        let rows = || {
            [
                OutputRow {
                    cells: &cells1,
                    outputs: &out1,
                },
                OutputRow {
                    cells: &cells2,
                    outputs: &out2,
                },
            ]
        };
        let written = text(write_output(&head, rows(), true).unwrap());
        assert_eq!(
            written,
            "Serial Number,Product Name,Input Image Urls,Output Image Urls,Errors\n\
             1,SKU1,\"http://x/1.jpg,http://x/2.jpg,http://x/3.jpg\",\
             \"https://o/1.jpg,,https://o/3.jpg\",2: HTTP 404\n\
             2,SKU2,http://x/4.jpg,,\n"
        );
        let written = text(write_output(&head, rows(), false).unwrap());
        assert!(
            written.starts_with("Serial Number,Product Name,Input Image Urls,Output Image Urls\n")
        );
        assert!(written.ends_with("\n2,SKU2,http://x/4.jpg,\n"));
    }

    #[test]
    fn several_errors_are_joined() {
        let head = header(&["U"]);
        let cells = header(&["a"]);
        let outputs = [
            ImageOutcome::Failed("timeout".into()),
            ImageOutcome::Stored("https://o/2.jpg".into()),
            ImageOutcome::Failed("not an image".into()),
        ];
        let written = text(
            write_output(
                &head,
                [OutputRow {
                    cells: &cells,
                    outputs: &outputs,
                }],
                true,
            )
            .unwrap(),
        );
        assert!(
            written.ends_with("a,\",https://o/2.jpg,\",1: timeout; 3: not an image\n"),
            "{written}"
        );
    }

    /// Taken a few rows at a time, the parts add up to the whole file's bytes.
    #[test]
    fn output_in_parts_is_the_whole_output() {
        let head = header(&["Serial", "Name, \"quoted\"", "Input Image Urls"]);
        let rows: Vec<(Vec<String>, Vec<ImageOutcome>)> = (0..25)
            .map(|i| {
                let cells = header(&[&i.to_string(), "=x\ny", "http://a/1.jpg,http://a/2.jpg"]);
                let outputs = vec![
                    ImageOutcome::Stored(format!("https://o/{i}.jpg")),
                    if i % 3 == 0 {
                        ImageOutcome::Failed("HTTP 404".into())
                    } else {
                        ImageOutcome::Pending
                    },
                ];
                (cells, outputs)
            })
            .collect();
        let as_rows = || {
            rows.iter()
                .map(|(cells, outputs)| OutputRow { cells, outputs })
        };
        for with_errors in [false, true] {
            let whole = write_output(&head, as_rows(), with_errors).unwrap();
            let mut writer = OutputWriter::new(&head, with_errors, false).unwrap();
            let mut parts = Vec::new();
            for (i, row) in as_rows().enumerate() {
                writer.write_row(&row).unwrap();
                if i % 7 == 0 {
                    parts.extend(writer.take().unwrap());
                }
            }
            parts.extend(writer.finish().unwrap());
            assert_eq!(text(parts), text(whole.clone()));
            // With a byte order mark: the same bytes after it, however they are taken.
            let mut writer = OutputWriter::new(&head, with_errors, true).unwrap();
            let mut parts = writer.take().unwrap();
            for row in as_rows() {
                writer.write_row(&row).unwrap();
            }
            parts.extend(writer.finish().unwrap());
            assert_eq!(parts[..3], [0xEF, 0xBB, 0xBF]);
            assert_eq!(text(parts[3..].to_vec()), text(whole));
        }
    }

    #[test]
    fn formula_guard() {
        for (cell, expected) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@x", "'@x"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("plain", "plain"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(sanitize_cell(cell), expected, "{cell:?}");
        }
        assert!(matches!(sanitize_cell("safe"), Cow::Borrowed(_)));

        let head = header(&["=H", "Input Image Urls"]);
        let cells = header(&["@evil", "http://x/1.jpg"]);
        let outputs = [ImageOutcome::Failed("-bad".into())];
        let written = text(
            write_output(
                &head,
                [OutputRow {
                    cells: &cells,
                    outputs: &outputs,
                }],
                true,
            )
            .unwrap(),
        );
        assert_eq!(
            written,
            "'=H,Input Image Urls,Output Image Urls,Errors\n'@evil,http://x/1.jpg,,1: -bad\n"
        );
    }

    #[test]
    fn row_length_mismatch_is_an_error() {
        let head = header(&["A", "B"]);
        let cells = header(&["1"]);
        let result = write_output(
            &head,
            [OutputRow {
                cells: &cells,
                outputs: &[],
            }],
            false,
        );
        assert!(matches!(
            result,
            Err(CsvError::RowLength {
                row: 0,
                expected: 2,
                found: 1
            })
        ));
    }

    /// The output CSV of a parsed input with one outcome per URL (`outputs`, by row).
    fn write_parsed(
        parsed: &ParsedCsv,
        outputs: &[Vec<ImageOutcome>],
        with_errors: bool,
    ) -> Vec<u8> {
        let cells: Vec<Vec<String>> = parsed.rows.iter().map(|r| r.cells.to_vec()).collect();
        let rows = cells
            .iter()
            .zip(outputs)
            .map(|(cells, outputs)| OutputRow { cells, outputs });
        write_output(&parsed.header, rows, with_errors).unwrap()
    }

    #[test]
    fn round_trip() {
        let input = "\u{feff}Notes,Serial Number,Product Name,Input Image Urls\r\n\
                     \"multi\nline, with comma\",1,SKU1,https://example.com/a.jpg,https://example.com/b.jpg\r\n\
                     =1+1,2,SKU2,https://example.com/c.jpg\r\n";
        let parsed: ParsedCsv = parse(input.as_bytes(), &CsvLimits::default()).unwrap();
        let outputs: Vec<Vec<ImageOutcome>> = parsed
            .rows
            .iter()
            .map(|row| {
                (0..row.urls.len())
                    .map(|i| {
                        ImageOutcome::Stored(format!(
                            "https://cdn.example.com/{}/{i}.jpg",
                            row.serial
                        ))
                    })
                    .collect()
            })
            .collect();
        let write = |parsed: &ParsedCsv| write_parsed(parsed, &outputs, false);
        let written = write(&parsed);

        assert!(
            String::from_utf8_lossy(&written)
                .contains(",\"https://cdn.example.com/1/0.jpg,https://cdn.example.com/1/1.jpg\""),
            "{}",
            String::from_utf8_lossy(&written)
        );

        // Uploaded again, the output reads as its input did (the added column is left
        // out), and the same outcomes write the same file.
        let again = parse(&written, &CsvLimits::default()).unwrap();
        assert_eq!(again.header, parsed.header);
        assert_eq!(again.urls_column, 3);
        assert_eq!(again.rows.len(), 2);
        for (before, after) in parsed.rows.iter().zip(&again.rows) {
            assert_eq!(before.urls, after.urls);
            assert_eq!(before.serial, after.serial);
        }
        assert_eq!(write(&again), written);
        assert_eq!(again.rows[0].cells.to_vec()[0], "multi\nline, with comma");
        assert_eq!(again.rows[1].cells.to_vec()[0], "'=1+1");
        assert_eq!(again.rows[1].line, 4);
    }

    /// Arbitrary inputs never panic, and whatever parses can be written.
    #[test]
    fn arbitrary_bytes_never_panic() {
        const PIECES: &[&[u8]] = &[
            b",",
            b"\"",
            b"\n",
            b"\r\n",
            b"\r",
            b" ",
            b"http://x.io/a",
            b"https://",
            b"ftp://a",
            b"Serial Number",
            b"Product Name",
            b"Input Image Urls",
            b"S.No",
            b"\xef\xbb\xbf",
            b"\xff",
            b"\xc3\xa9",
            b"=",
            b"1",
            b"2",
            b"a",
            b"\t",
            b"\0",
            b"%",
            b"[::1]",
            b"\xe2\x80\xa8",
        ];
        const HEAD: &[u8] = b"Serial Number,Product Name,Input Image Urls\n";
        let limits = CsvLimits {
            max_rows: 5,
            max_urls_per_row: 3,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next_u64();
        let mut parsed_ok = 0;
        for round in 0..4000 {
            let mut input = Vec::new();
            if round % 2 == 0 {
                input.extend_from_slice(HEAD);
            }
            if round % 4 == 0 {
                // Mostly well-formed rows, so the writer and re-parse run too.
                const NAMES: &[&str] = &["A", "=x", "\"q,\"\"x\"\"\"", "-1", " b "];
                const URLS: &[&str] = &[
                    "http://x.io/a",
                    "https://X.io/b c",
                    "http://[::1]/",
                    "http://é.io/",
                ];
                for serial in 0..next() % 7 {
                    let name = NAMES[(next() % NAMES.len() as u64) as usize];
                    input.extend_from_slice(format!("{serial},{name}").as_bytes());
                    for _ in 0..=next() % 3 {
                        input.push(b',');
                        input.extend_from_slice(
                            URLS[(next() % URLS.len() as u64) as usize].as_bytes(),
                        );
                    }
                    input.push(b'\n');
                }
            }
            let len = next() % if round % 4 == 0 { 3 } else { 40 };
            for _ in 0..len {
                let r = next();
                if r % 5 == 0 {
                    input.push((r >> 8) as u8);
                } else {
                    input.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()]);
                }
            }
            if let Ok(parsed) = parse(&input, &limits) {
                parsed_ok += 1;
                assert!(!parsed.rows.is_empty());
                let outputs: Vec<Vec<ImageOutcome>> = parsed
                    .rows
                    .iter()
                    .map(|row| {
                        row.urls
                            .iter()
                            .map(|u| ImageOutcome::Failed(u.to_string()))
                            .collect()
                    })
                    .collect();
                let written = write_parsed(&parsed, &outputs, true);
                let again = parse(
                    &written,
                    &CsvLimits {
                        max_rows: 5,
                        max_urls_per_row: 3,
                    },
                );
                assert!(
                    again.is_ok(),
                    "{:?} -> {again:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        assert!(parsed_ok > 100, "only {parsed_ok} inputs parsed");
    }
}
