//! Reading and checking an uploaded CSV (spec §3).

use std::{borrow::Cow, collections::HashMap};

use ::csv::{ReaderBuilder, StringRecord};

use super::problem::Problems;
use super::{Cells, CsvLimits, CsvProblem, ImageUrl, ParsedCsv, ProductRow};

/// The serial column's spellings SPEC §3 names, normalised (whitespace removed,
/// lowercase): `Serial Number`, `S. No.`, `S.No`, `Sr. No.`.
const SPEC_SERIAL_KEYS: &[&str] = &["serialnumber", "s.no.", "s.no", "sr.no."];

/// Normalised spellings of the serial column: [`SPEC_SERIAL_KEYS`] and the other
/// spellings spreadsheets use. Those others name the serial column only in a file
/// without one of the specification's: beside a `Serial Number` column, a `Serial`
/// column is a column of the user's own (a manufacturer's serial), passed through.
const SERIAL_KEYS: &[&str] = &[
    "serialnumber",
    "serial",
    "serialno",
    "serialno.",
    "s.no.",
    "s.no",
    "sno",
    "sno.",
    "sr.no.",
    "sr.no",
    "srno",
    "srno.",
];

/// The three columns every upload needs, found by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Required {
    Serial = 0,
    ProductName = 1,
    Urls = 2,
}

impl Required {
    const ALL: [Required; 3] = [Required::Serial, Required::ProductName, Required::Urls];

    /// The canonical spelling, used in messages about a missing column.
    fn name(self) -> &'static str {
        match self {
            Required::Serial => "Serial Number",
            Required::ProductName => "Product Name",
            Required::Urls => "Input Image Urls",
        }
    }

    /// Which required column a header cell names, if any; comparison ignores
    /// case and all whitespace so `" input image urls "` still matches.
    fn classify(header: &str) -> Option<Required> {
        let key = column_key(header);
        if SERIAL_KEYS.contains(&key.as_str()) {
            Some(Required::Serial)
        } else if key == "productname" {
            Some(Required::ProductName)
        } else if key == "inputimageurls" {
            Some(Required::Urls)
        } else {
            None
        }
    }
}

/// A header cell as columns are matched: case and all whitespace (and a BOM) ignored.
fn column_key(header: &str) -> String {
    header
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{feff}')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The columns the output CSV adds, as [`column_key`] reads them. An input that has
/// them already (an earlier output uploaded again) has them dropped: the output writes
/// them afresh, once. Kept, they would come back twice, and a reader taking the first
/// of two same-named columns would get the old URLs and errors.
const OUTPUT_COLUMNS: [&str; 2] = ["outputimageurls", "errors"];

/// Most columns a header may have. Every row keeps a cell per column, so a header of
/// millions of empty names would cost many times the upload's size in memory.
pub(super) const MAX_COLUMNS: usize = 1000;

/// Most cells any record may have, empty ones included. The reader holds a record's
/// cells before anything looks at them (the header's trailing empty columns are
/// dropped only then), and a 20 MB line of commas is 20 million cells, several hundred
/// megabytes in memory: such a line is refused by a counting pass that holds none.
pub(super) const MAX_CELLS: usize = 10_000;

/// The first records with more than `max` cells (at most [`MAX_WIDE_REPORTED`]), as
/// the byte offset each starts at, counted by `csv_core` with the reader's own
/// settings (a quoted comma is no separator) and holding no cell.
fn records_wider_than(text: &[u8], max: usize) -> Vec<usize> {
    let mut reader = csv_core::Reader::new();
    let mut out = [0u8; 4096];
    let (mut at, mut start, mut cells) = (0, 0, 0);
    let mut wide = Vec::new();
    loop {
        let (result, read, _) = reader.read_field(&text[at..], &mut out);
        at += read;
        match result {
            csv_core::ReadFieldResult::InputEmpty | csv_core::ReadFieldResult::OutputFull => {}
            csv_core::ReadFieldResult::Field { record_end } => {
                cells += 1;
                if cells == max + 1 {
                    wide.push(start);
                    if wide.len() == MAX_WIDE_REPORTED {
                        return wide;
                    }
                }
                if record_end {
                    (start, cells) = (at, 0);
                }
            }
            csv_core::ReadFieldResult::End => return wide,
        }
    }
}

/// How many over-wide records [`records_wider_than`] reports: a hostile file may
/// have thousands, and the first few say what is wrong.
const MAX_WIDE_REPORTED: usize = 10;

/// Longest column name, in characters. The header is stored with the request and read
/// back whenever it is looked at (every status poll): a name the size of the upload
/// would make each of those reads cost megabytes.
const MAX_COLUMN_NAME: usize = 1000;

/// Longest the column names may be in all, in characters: a wide spreadsheet export
/// (a thousand columns of 60-character names) fits.
const MAX_HEADER_CHARS: usize = 100_000;

/// The header row once its required columns are located.
struct Header {
    /// The names, without [`OUTPUT_COLUMNS`].
    names: Vec<String>,
    /// Per column as written, whether it is kept (`false`: one of [`OUTPUT_COLUMNS`],
    /// left out of every row too); empty when every column is kept.
    keep: Vec<bool>,
    line: u64,
    serial: usize,
    product_name: usize,
    urls: usize,
    /// The required columns' names as problems give them (trimmed, shortened).
    labels: [String; 3],
}

impl Header {
    /// Columns as written, the dropped ones included.
    fn written(&self) -> usize {
        if self.keep.is_empty() {
            self.names.len()
        } else {
            self.keep.len()
        }
    }

    /// Whether the URL column is the last one as written, so that a row's unquoted URL
    /// list may spill over into further cells. Not when a dropped column follows it:
    /// that column's cell would be taken for a URL, or a URL for its cell.
    fn urls_is_last(&self) -> bool {
        self.urls + 1 == self.names.len() && self.keep.last() != Some(&false)
    }

    /// The name problems give for a required column.
    fn column(&self, required: Required) -> Option<&str> {
        Some(self.labels[required as usize].as_str())
    }

    /// A row without the cells of the dropped output columns.
    fn without_dropped<'a>(&self, record: &'a StringRecord) -> Cow<'a, StringRecord> {
        if self.keep.is_empty() {
            return Cow::Borrowed(record);
        }
        Cow::Owned(
            record
                .iter()
                .enumerate()
                .filter(|(i, _)| self.keep.get(*i).copied().unwrap_or(true))
                .map(|(_, cell)| cell)
                .collect(),
        )
    }
}

/// Physical lines up to a byte offset, counted forward only (records come in order),
/// so a whole file costs one pass. A line ends at `\n`, `\r\n` or a lone `\r` (the
/// old Mac "CSV" export), as the CSV reader ends records; the reader's own line count
/// knows only `\n`.
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(text: &'a [u8]) -> Self {
        Self {
            text,
            at: 0,
            line: 1,
        }
    }

    /// The line `offset` is on; `offset` must not go back.
    fn at(&mut self, offset: usize) -> u64 {
        let end = offset.min(self.text.len());
        while self.at < end {
            match self.text[self.at] {
                b'\n' => self.line += 1,
                b'\r' if self.text.get(self.at + 1) != Some(&b'\n') => self.line += 1,
                _ => {}
            }
            self.at += 1;
        }
        self.line
    }

    /// The line a record starts on. The reader reports the position before any blank
    /// lines it skipped, so those are stepped over here.
    fn of(&mut self, record: &StringRecord) -> Option<u64> {
        let start = usize::try_from(record.position()?.byte()).ok()?;
        Some(self.at_record(start))
    }

    /// The line of the record that starts at byte `start`, or after the blank lines
    /// that follow it.
    fn at_record(&mut self, start: usize) -> u64 {
        let blank = self
            .text
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.at(start + blank)
    }
}

/// Parses and checks a whole upload, returning either a valid [`ParsedCsv`]
/// or every problem found (in line order, at most about a thousand).
///
/// Takes the raw bytes (already size-capped by the caller) so the encoding
/// check can point at the line of the first invalid byte.
pub fn parse(input: &[u8], limits: &CsvLimits) -> Result<ParsedCsv, Vec<CsvProblem>> {
    let text = match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => return Err(vec![not_utf8(input, e.valid_up_to())]),
    };
    // Excel's "CSV UTF-8" starts with a BOM; it is not part of the header.
    let bom = text.starts_with('\u{feff}');
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let max_cells = MAX_CELLS.max(MAX_COLUMNS.saturating_add(limits.max_urls_per_row));
    let wide = records_wider_than(text.as_bytes(), max_cells);
    if !wide.is_empty() {
        let mut lines = Lines::new(text.as_bytes());
        let mut problems = Problems::default();
        for start in wide {
            problems.push(
                lines.at_record(start),
                None,
                format!(
                    "this row has more than {max_cells} cells; a row holds at most {MAX_COLUMNS} columns and {} image URLs",
                    limits.max_urls_per_row
                ),
            );
        }
        return Err(problems.finish());
    }

    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut problems = Problems::default();
    let mut record = StringRecord::new();
    let mut lines = Lines::new(text.as_bytes());

    // The header is the first non-blank record.
    let header = loop {
        match reader.read_record(&mut record) {
            Ok(true) if is_blank(&record) => continue,
            Ok(true) => {
                let line = lines.of(&record).unwrap_or(1);
                break read_header(&record, line, &mut problems);
            }
            Ok(false) => {
                problems.push(
                    1,
                    None,
                    "the file is empty; it needs a header row and at least one product row"
                        .to_owned(),
                );
                break None;
            }
            Err(e) => {
                push_read_error(&e, 1, &mut problems);
                break None;
            }
        }
    };
    let Some(header) = header else {
        return Err(problems.finish());
    };

    let max_rows = limits.max_rows.min(u32::MAX as usize);
    let mut rows: Vec<ProductRow> = Vec::new();
    let mut seen_serials: HashMap<String, u64> = HashMap::new();
    let mut data_rows: usize = 0;
    let mut first_excess_line: Option<u64> = None;
    let mut last_line = header.line;

    while !problems.is_full() {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                push_read_error(&e, last_line, &mut problems);
                break;
            }
        }
        if is_blank(&record) {
            continue;
        }
        let line = lines.of(&record).unwrap_or(last_line + 1);
        last_line = line;
        let index = data_rows;
        data_rows += 1;
        if index >= max_rows && first_excess_line.is_none() {
            first_excess_line = Some(line);
        }
        let checked = check_row(
            &header.without_dropped(&record),
            record.len(),
            line,
            &header,
            limits,
            &mut seen_serials,
            &mut problems,
        );
        // Rows are only kept while the file is still valid: a rejected file
        // needs its problems, not its data.
        if let (Some(mut row), true, None) = (checked, problems.is_empty(), first_excess_line) {
            // `index < max_rows <= u32::MAX` here, so this cannot fail.
            row.row = u32::try_from(index).unwrap_or(u32::MAX);
            rows.push(row);
        }
    }

    if let Some(line) = first_excess_line {
        let count = if problems.is_full() {
            format!("more than {data_rows}")
        } else {
            data_rows.to_string()
        };
        problems.push_always(
            line,
            None,
            format!(
                "too many product rows: the file has {count}, at most {max_rows} are allowed; \
                 split it into several files"
            ),
        );
    }
    if data_rows == 0 && problems.is_empty() {
        problems.push(
            header.line,
            None,
            "the file has a header row but no product rows".to_owned(),
        );
    }
    if !problems.is_empty() {
        return Err(problems.finish());
    }
    Ok(ParsedCsv {
        header: header.names,
        urls_column: header.urls,
        bom,
        rows,
    })
}

/// The problem for a file that is not UTF-8, pointing at the first bad byte.
fn not_utf8(input: &[u8], valid_up_to: usize) -> CsvProblem {
    let line = Lines::new(input).at(valid_up_to);
    CsvProblem {
        line,
        column: None,
        message: format!(
            "the file is not valid UTF-8 text (first invalid byte at offset {valid_up_to}); \
             save it as \"CSV UTF-8\""
        ),
    }
}

/// Records a reader error; with valid UTF-8 in memory this should not happen.
fn push_read_error(e: &::csv::Error, fallback_line: u64, problems: &mut Problems) {
    let line = e.position().map_or(fallback_line, |p| p.line());
    problems.push(
        line,
        None,
        format!("the file could not be read as CSV: {e}"),
    );
}

/// Blank lines are skipped, and so are rows whose cells are all empty
/// (spreadsheets export trailing `,,,` rows).
fn is_blank(record: &StringRecord) -> bool {
    record.iter().all(|field| field.trim().is_empty())
}

/// Locates the required columns, recording the header's problems; `None` when the
/// rows cannot be checked (a required column missing, too many columns).
fn read_header(record: &StringRecord, line: u64, problems: &mut Problems) -> Option<Header> {
    let mut names: Vec<String> = record.iter().map(str::to_owned).collect();
    // Trailing unnamed columns (a trailing comma on the header) are not
    // columns; dropping them keeps a last `Input Image Urls` column last.
    while names.last().is_some_and(|n| n.trim().is_empty()) {
        names.pop();
    }
    if names.len() > MAX_COLUMNS {
        problems.push(
            line,
            None,
            format!(
                "the header row has {} columns; at most {MAX_COLUMNS} are allowed",
                names.len()
            ),
        );
        return None;
    }
    // `Errors` alone is a column of the user's own, not an earlier output's (which has
    // `Output Image Urls` too): dropped, its values would be lost without a word, and
    // kept, the output's own `Errors` would make two of that name.
    let has = |key: &str| names.iter().any(|n| column_key(n) == key);
    if has(OUTPUT_COLUMNS[1]) && !has(OUTPUT_COLUMNS[0]) {
        let name = names
            .iter()
            .find(|n| column_key(n) == OUTPUT_COLUMNS[1])
            .map_or("", |n| n.trim());
        problems.push(
            line,
            Some(shorten(name).as_str()),
            format!(
                "column \"{}\" is the one the output adds to say which images failed; rename it to keep its values (an earlier output, which has \"Output Image Urls\" too, may keep it)",
                shorten(name)
            ),
        );
    }
    let mut keep: Vec<bool> = names
        .iter()
        .map(|n| !OUTPUT_COLUMNS.contains(&column_key(n).as_str()))
        .collect();
    if keep.iter().all(|&k| k) {
        keep.clear();
    } else {
        let mut kept = keep.iter();
        names.retain(|_| kept.next().copied().unwrap_or(true));
    }
    // The names are stored as written, spaces and all: measured so too.
    let mut total = 0;
    for name in &names {
        let len = name.chars().count();
        total += len;
        if len > MAX_COLUMN_NAME {
            problems.push(
                line,
                Some(shorten(name.trim()).as_str()),
                format!(
                    "column name \"{}\" is {len} characters long; at most {MAX_COLUMN_NAME} are allowed",
                    shorten(name.trim())
                ),
            );
        }
    }
    if total > MAX_HEADER_CHARS {
        problems.push(
            line,
            None,
            format!(
                "the column names are {total} characters long in all; at most {MAX_HEADER_CHARS} are allowed"
            ),
        );
    }

    let spec_serial = names
        .iter()
        .any(|n| SPEC_SERIAL_KEYS.contains(&column_key(n).as_str()));
    let mut found: [Option<usize>; 3] = [None; 3];
    for (index, name) in names.iter().enumerate() {
        let Some(required) = Required::classify(name) else {
            continue;
        };
        if required == Required::Serial
            && spec_serial
            && !SPEC_SERIAL_KEYS.contains(&column_key(name).as_str())
        {
            continue;
        }
        match found[required as usize] {
            Some(first) => problems.push(
                line,
                Some(shorten(name.trim()).as_str()),
                format!(
                    "column \"{}\" is a second \"{}\" column (the first is \"{}\"); keep only one",
                    shorten(name.trim()),
                    required.name(),
                    shorten(names.get(first).map_or("", |s| s.trim())),
                ),
            ),
            None => found[required as usize] = Some(index),
        }
    }
    let missing: Vec<Required> = Required::ALL
        .into_iter()
        .filter(|r| found[*r as usize].is_none())
        .collect();
    if !missing.is_empty() && names.len() == 1 && names[0].contains([';', '\t', '|']) {
        problems.push(
            line,
            None,
            "the header row has a single column; the file must use commas as separators".to_owned(),
        );
    }
    for required in missing {
        let also = if required == Required::Serial {
            " (also accepted: \"S. No.\", \"Sr. No.\", \"Serial\")"
        } else {
            ""
        };
        problems.push(
            line,
            Some(required.name()),
            format!("missing required column \"{}\"{also}", required.name()),
        );
    }
    // With every required column found, the rows are checked even when the header has
    // a problem (a second "Product Name", a stray "Errors"): the answer lists every
    // problem of the file, not the header's alone, and the file is refused all the same.
    match found {
        [Some(serial), Some(product_name), Some(urls)] => {
            let labels = [serial, product_name, urls].map(|i| shorten(names[i].trim()));
            Some(Header {
                names,
                keep,
                line,
                serial,
                product_name,
                urls,
                labels,
            })
        }
        _ => None,
    }
}

/// Checks one data row, recording every problem in it. Returns the row
/// (with `row` still to be filled in) when it has none.
///
/// `record` is the row without the cells of dropped columns; `written` is how many
/// cells it had as written, which is what messages count (as does the header's).
fn check_row(
    record: &StringRecord,
    written: usize,
    line: u64,
    header: &Header,
    limits: &CsvLimits,
    seen_serials: &mut HashMap<String, u64>,
    problems: &mut Problems,
) -> Option<ProductRow> {
    let columns = header.names.len();
    let urls_is_last = header.urls_is_last();
    let extras: Vec<&str> = record.iter().skip(columns).collect();
    let (fields, header_columns) = (written, header.written());
    if record.len() < columns {
        let hint = if record.iter().any(|f| f.contains(['\n', '\r'])) {
            UNMATCHED_QUOTE_HINT
        } else {
            ""
        };
        problems.push(
            line,
            None,
            format!(
                "this row has {fields} cells but the header has {header_columns} columns{hint}"
            ),
        );
        return None;
    }
    if !urls_is_last && extras.iter().any(|f| !f.trim().is_empty()) {
        problems.push(
            line,
            None,
            format!(
                "this row has {fields} cells but the header has {header_columns} columns; \
                 put the image URLs of a row in one quoted cell, e.g. \"url1,url2\""
            ),
        );
        return None;
    }

    let mut ok = true;
    let serial = record.get(header.serial).unwrap_or("").trim();
    let serial_column = header.column(Required::Serial);
    if serial.is_empty() {
        problems.push(line, serial_column, "the serial number is empty".to_owned());
        ok = false;
    } else if serial.contains('\0') {
        problems.push(line, serial_column, nul_problem("serial number"));
        ok = false;
    } else if let Some(first) = seen_serials.get(serial) {
        problems.push(
            line,
            serial_column,
            format!(
                "serial number \"{}\" is already used on line {first}",
                shorten(serial)
            ),
        );
        ok = false;
    } else {
        seen_serials.insert(serial.to_owned(), line);
    }

    let product_name = record.get(header.product_name).unwrap_or("").trim();
    if product_name.is_empty() {
        problems.push(
            line,
            header.column(Required::ProductName),
            "the product name is empty".to_owned(),
        );
        ok = false;
    } else if product_name.contains('\0') {
        problems.push(
            line,
            header.column(Required::ProductName),
            nul_problem("product name"),
        );
        ok = false;
    }

    let urls_column = header.column(Required::Urls);
    let mut urls = Vec::new();
    let pieces = record
        .get(header.urls)
        .into_iter()
        .chain(if urls_is_last { extras } else { Vec::new() })
        .flat_map(|cell| cell.split(','))
        .map(str::trim)
        .filter(|piece| !piece.is_empty());
    let mut count = 0;
    let mut written = Vec::new();
    for (position, piece) in pieces.enumerate() {
        count += 1;
        match ImageUrl::parse(piece) {
            Ok(url) => {
                urls.push(url);
                written.push(piece);
            }
            Err(reason) => {
                let hint = if piece.contains(['\n', '\r']) {
                    UNMATCHED_QUOTE_HINT
                } else {
                    ""
                };
                problems.push(
                    line,
                    urls_column,
                    format!(
                        "image URL {} \"{}\" {reason}{hint}",
                        position + 1,
                        shorten(piece)
                    ),
                );
                ok = false;
            }
        }
    }
    if count == 0 {
        problems.push(line, urls_column, "the row has no image URL".to_owned());
        ok = false;
    }
    if count > limits.max_urls_per_row {
        problems.push(
            line,
            urls_column,
            format!(
                "the row has {count} image URLs; at most {} are allowed per row",
                limits.max_urls_per_row
            ),
        );
        ok = false;
    }
    if !ok {
        return None;
    }

    // The URL cell is written back as the merchant wrote the URLs (trimmed, empty
    // pieces dropped), not as the parser normalised them: one cell even when the
    // list spilled over unquoted into further fields.
    let urls_cell = written.join(",");
    let cells = Cells::new(
        record
            .iter()
            .take(columns)
            .enumerate()
            .map(|(i, cell)| if i == header.urls { &urls_cell } else { cell }),
    );
    Some(ProductRow {
        row: 0,
        line,
        serial: serial.to_owned(),
        product_name: product_name.to_owned(),
        urls,
        cells,
    })
}

/// A NUL character cannot be stored in a PostgreSQL text column (SQLite would take
/// it), so it is refused here, the same on both backends, rather than failing the
/// insert.
fn nul_problem(what: &str) -> String {
    format!("the {what} contains a NUL character (U+0000), which cannot be stored")
}
/// Said of a problem in a cell that spans lines: a quote left open swallows the
/// next lines into it, and the problems shown are then not the real one.
const UNMATCHED_QUOTE_HINT: &str =
    "; a cell spans several lines, check for an unmatched double quote";

/// Cuts a long cell for a message, on a character boundary.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Serial Number,Product Name,Input Image Urls\n";

    fn parse_ok(input: &str) -> ParsedCsv {
        parse(input.as_bytes(), &CsvLimits::default())
            .unwrap_or_else(|p| panic!("unexpected problems: {p:#?}"))
    }

    fn problems_with(input: &[u8], limits: &CsvLimits) -> Vec<CsvProblem> {
        match parse(input, limits) {
            Ok(parsed) => panic!("expected problems, got {parsed:#?}"),
            Err(problems) => problems,
        }
    }

    fn problems(input: &str) -> Vec<CsvProblem> {
        problems_with(input.as_bytes(), &CsvLimits::default())
    }

    fn urls(row: &ProductRow) -> Vec<&str> {
        row.urls.iter().map(ImageUrl::as_str).collect()
    }

    #[test]
    fn a_header_problem_does_not_hide_the_rows_problems() {
        let found = problems(
            "Serial Number,Product Name,Input Image Urls,Errors\n1,,ftp://x.example/a.jpg\n",
        );
        let lines: Vec<(u64, Option<&str>)> = found
            .iter()
            .map(|p| (p.line, p.column.as_deref()))
            .collect();
        assert!(lines.contains(&(1, Some("Errors"))), "{found:#?}");
        assert!(lines.contains(&(2, Some("Product Name"))), "{found:#?}");
        assert!(lines.contains(&(2, Some("Input Image Urls"))), "{found:#?}");
    }

    #[test]
    fn an_open_quote_in_the_url_cell_is_hinted_at() {
        let found = problems(&format!(
            "{HEADER}1,SKU1,\"https://a.example/x.jpg\n2,,ftp://b.example/y\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p.line == 2 && p.message.ends_with(UNMATCHED_QUOTE_HINT)),
            "{found:#?}"
        );
    }

    #[test]
    fn a_repeated_long_serial_is_quoted_shortened() {
        let serial = "S".repeat(10_000);
        let found = problems(&format!(
            "{HEADER}{serial},A,http://a.example/1.jpg\n{serial},B,http://a.example/2.jpg\n"
        ));
        let repeated = found
            .iter()
            .find(|p| p.message.contains("already used on line 2"))
            .expect("the repeated serial is a problem");
        assert!(repeated.message.len() < 200, "{}", repeated.message);
    }

    #[test]
    fn classic_sample_with_unquoted_url_list() {
        let parsed = parse_ok(
            "Serial Number,Product Name,Input Image Urls\n\
             1,SKU1,https://example.com/a.jpg,https://example.com/b.jpg\n\
             2,SKU2,https://example.com/c.jpg\n",
        );
        assert_eq!(
            parsed.header,
            ["Serial Number", "Product Name", "Input Image Urls"]
        );
        assert_eq!(parsed.urls_column, 2);
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.image_count(), 3);
        let first = &parsed.rows[0];
        assert_eq!((first.row, first.line), (0, 2));
        assert_eq!(
            (first.serial.as_str(), first.product_name.as_str()),
            ("1", "SKU1")
        );
        assert_eq!(
            urls(first),
            ["https://example.com/a.jpg", "https://example.com/b.jpg"]
        );
        assert_eq!(
            first.cells.to_vec(),
            [
                "1",
                "SKU1",
                "https://example.com/a.jpg,https://example.com/b.jpg"
            ]
        );
        let second = &parsed.rows[1];
        assert_eq!((second.row, second.line), (1, 3));
        assert_eq!(urls(second), ["https://example.com/c.jpg"]);
    }

    #[test]
    fn quoted_url_list_with_spaces_and_empty_pieces() {
        let parsed = parse_ok(&format!(
            "{HEADER}1,SKU1,\" https://example.com/a.jpg , ,https://example.com/b.jpg,\"\n"
        ));
        assert_eq!(
            urls(&parsed.rows[0]),
            ["https://example.com/a.jpg", "https://example.com/b.jpg"]
        );
        assert_eq!(
            parsed.rows[0].cells.to_vec()[2],
            "https://example.com/a.jpg,https://example.com/b.jpg"
        );
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        let input = "\u{feff}Serial Number,Product Name,Input Image Urls\r\n\r\n\
                     1,A,http://example.com/1.jpg\r\n\
                     \r\n\
                     ,,\r\n\
                     2,B,http://example.com/2.jpg\r\n\r\n";
        let parsed = parse_ok(input);
        assert_eq!(parsed.header[0], "Serial Number");
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].line, 3);
        assert_eq!(parsed.rows[1].line, 6);
        assert_eq!(parsed.rows[1].row, 1);
        // Line numbers stay physical after blank lines.
        let bad = problems(&input.replace("2,B,", "2,,"));
        assert_eq!((bad[0].line, bad.len()), (6, 1));
    }

    #[test]
    fn shuffled_columns_with_loose_spelling_and_passthrough() {
        let parsed = parse_ok(
            "Price, input image urls ,Notes,PRODUCT NAME,s. no.,\n\
             -5,https://example.com/a.jpg,keep me,Shoe,7\n",
        );
        assert_eq!(
            parsed.header,
            [
                "Price",
                " input image urls ",
                "Notes",
                "PRODUCT NAME",
                "s. no."
            ]
        );
        assert_eq!(parsed.urls_column, 1);
        let row = &parsed.rows[0];
        assert_eq!(
            (row.serial.as_str(), row.product_name.as_str()),
            ("7", "Shoe")
        );
        assert_eq!(
            row.cells.to_vec(),
            ["-5", "https://example.com/a.jpg", "keep me", "Shoe", "7"]
        );
        for spelling in ["S.No", "Sr. No.", "Serial", "SNo", "serial number"] {
            let input = format!("{spelling},Product Name,Input Image Urls\n1,A,http://x.io/a\n");
            assert_eq!(parse_ok(&input).rows[0].serial, "1", "{spelling}");
        }
    }

    /// Beside a spelling SPEC §3 names, another serial spelling is a column of the
    /// user's own: passed through, not a second serial column.
    #[test]
    fn a_serial_spelling_beside_the_specs_is_passed_through() {
        for other in ["Serial", "Serial No", "SNo", "Sr No"] {
            let input = format!(
                "Serial Number,Product Name,{other},Input Image Urls\n1,Lamp,SN-778,http://x.io/a\n"
            );
            let parsed = parse_ok(&input);
            assert_eq!(parsed.rows[0].serial, "1", "{other}");
            assert_eq!(parsed.header[2], other);
            assert!(
                parsed.rows[0].cells.to_vec().iter().any(|c| c == "SN-778"),
                "{other}"
            );
        }
        // Two of the specification's spellings are still two serial columns, and two
        // others with none of the specification's are too.
        assert_eq!(
            problems("S.No,Sr. No.,Product Name,Input Image Urls\n1,1,A,http://x.io/a\n").len(),
            1
        );
        assert_eq!(
            problems("Serial,SNo,Product Name,Input Image Urls\n1,1,A,http://x.io/a\n").len(),
            1
        );
    }

    /// A line of millions of cells (commas) is refused by counting, before the reader
    /// holds its cells: every such line is named, and a quoted comma is no cell.
    #[test]
    fn a_line_of_too_many_cells_is_refused_before_it_is_read() {
        let commas = ",".repeat(MAX_CELLS * 3);
        let input = format!(
            "Serial Number,Product Name,Input Image Urls{commas}\n1,A,http://x.io/a\n\n\n2,B,http://x.io/b{commas}\n"
        );
        let found = problems(&input);
        assert_eq!(
            found.iter().map(|p| p.line).collect::<Vec<_>>(),
            [1, 5],
            "{found:?}"
        );
        assert!(
            found[0]
                .message
                .starts_with(&format!("this row has more than {MAX_CELLS} cells")),
            "{found:?}"
        );
        // As many cells as allowed, trailing empty header columns included, still parse;
        // commas inside quotes are one cell.
        let fits = ",".repeat(MAX_CELLS - 3);
        let quoted = format!("\"{}\"", ",".repeat(MAX_CELLS * 2));
        let parsed = parse_ok(&format!(
            "Serial Number,Product Name,Input Image Urls{fits}\n1,{quoted},http://x.io/a\n"
        ));
        assert_eq!(parsed.header.len(), 3);
        assert_eq!(parsed.rows[0].product_name.len(), MAX_CELLS * 2);
    }

    #[test]
    fn missing_columns_are_named_at_line_1() {
        let found = problems("Serial Number,Name,Urls\n1,A,http://x.io/a\n");
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|p| p.line == 1));
        assert_eq!(found[0].column.as_deref(), Some("Product Name"));
        assert!(found[0].message.contains("Product Name"));
        assert_eq!(found[1].column.as_deref(), Some("Input Image Urls"));
        let semicolons = problems("Serial Number;Product Name;Input Image Urls\n");
        assert!(semicolons[0].message.contains("commas"));
    }

    #[test]
    fn duplicated_required_column() {
        let found =
            problems("Serial Number,S. No.,Product Name,Input Image Urls\n1,1,A,http://x.io/a\n");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].line, found[0].column.as_deref()),
            (1, Some("S. No."))
        );
    }

    /// An earlier output uploaded again: the columns pixbatch adds are left out (the
    /// output writes them afresh, once); a column that merely mentions them stays.
    #[test]
    fn output_columns_of_an_earlier_output_are_dropped() {
        let parsed = parse_ok(
            "Serial Number,Product Name,Input Image Urls, output image urls ,Notes,Errors\n\
             1,A,\"http://x.io/a,http://x.io/b\",\"http://p/f/r/0-1.jpg,\",n1,2: HTTP 404\n",
        );
        assert_eq!(
            parsed.header,
            ["Serial Number", "Product Name", "Input Image Urls", "Notes"]
        );
        assert_eq!(parsed.urls_column, 2);
        assert_eq!(
            parsed.rows[0].cells.to_vec(),
            ["1", "A", "http://x.io/a,http://x.io/b", "n1"]
        );
        assert_eq!(parsed.rows[0].urls.len(), 2);
        let own = parse_ok(
            "Serial Number,Product Name,Input Image Urls,Old Output Image Urls\n1,A,http://x.io/a,x\n",
        );
        assert_eq!(own.header.len(), 4);
    }

    /// An output column after the URL column: an unquoted URL list cannot spill into
    /// it (its cell would be taken for a URL, or a URL dropped with it), so such a row
    /// is a problem, not a silently shorter list.
    #[test]
    fn an_output_column_after_the_urls_stops_their_spill() {
        let header = "Serial Number,Product Name,Input Image Urls,Output Image Urls\n";
        let found = problems(&format!(
            "{header}1,SKU1,http://x.io/a,http://x.io/b,http://x.io/c\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].message.starts_with(
                "this row has 5 cells but the header has 4 columns; put the image URLs"
            ),
            "{}",
            found[0].message
        );
        // Quoted, the list and the earlier output's cell are told apart.
        let parsed = parse_ok(&format!(
            "{header}1,SKU1,\"http://x.io/a,http://x.io/b\",http://p/f/r/0-0.jpg\n"
        ));
        assert_eq!(urls(&parsed.rows[0]), ["http://x.io/a", "http://x.io/b"]);
        assert_eq!(
            parsed.rows[0].cells.to_vec(),
            ["1", "SKU1", "http://x.io/a,http://x.io/b"]
        );
        // Dropped before the URL column, they leave the spill alone.
        let parsed = parse_ok(
            "Serial Number,Output Image Urls,Errors,Product Name,Input Image Urls\n\
             1,,old,SKU1,http://x.io/a,http://x.io/b\n",
        );
        assert_eq!(urls(&parsed.rows[0]), ["http://x.io/a", "http://x.io/b"]);
    }

    /// An `Errors` column without `Output Image Urls` is the user's own: refused
    /// with a problem naming it, not dropped with its values.
    #[test]
    fn an_errors_column_of_the_users_own_is_refused_not_dropped() {
        let found = problems(
            "Serial Number,Product Name, errors ,Input Image Urls\n1,A,none yet,http://x.io/a\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].line, found[0].column.as_deref()),
            (1, Some("errors"))
        );
        assert!(
            found[0]
                .message
                .starts_with("column \"errors\" is the one the output adds"),
            "{}",
            found[0].message
        );
    }

    /// A column name is copied into each of its problems: a long one is shortened, so
    /// a thousand problems cannot each carry megabytes.
    #[test]
    fn long_column_names_are_shortened_in_problems() {
        let padded = format!("Input{}Image Urls", " ".repeat(100_000));
        let mut input = format!("Serial Number,Product Name,{padded}\n");
        for i in 0..5 {
            input.push_str(&format!("{i},P{i},\n"));
        }
        input.push_str(&format!(
            "9,P9,http://x.io/a\n9,Q,http://x.io/b\n,{padded},\n"
        ));
        let found = problems(&input);
        // The name's own length and the header's, then the rows' problems (checked all
        // the same).
        assert_eq!(found.len(), 10, "{found:?}");
        assert!(
            found[0].message.ends_with("at most 1000 are allowed"),
            "{:?}",
            found[0]
        );
        for p in &found {
            assert!(
                p.column.as_ref().is_none_or(|c| c.chars().count() <= 81),
                "{p:?}"
            );
            assert!(p.message.len() < 300, "{p:?}");
        }
        let dup = problems(&format!(
            "Serial Number,Product Name,{padded},{padded}\n1,A,B\n"
        ));
        // The second column's problem among the names' and the row's.
        assert!(
            dup.iter().any(|p| p.message.contains("is a second")),
            "{dup:?}"
        );
        for p in &dup {
            assert!(p.message.len() < 300, "{p:?}");
        }
    }

    #[test]
    fn a_column_name_over_a_thousand_characters_is_a_problem() {
        let name = "n".repeat(MAX_COLUMN_NAME);
        parse_ok(&format!(
            "Serial Number,Product Name,Input Image Urls,{name}\n1,A,http://x.io/a,v\n"
        ));
        let found = problems(&format!(
            "Serial Number,Product Name,Input Image Urls,{name}n\n1,A,http://x.io/a,v\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .message
                .ends_with("is 1001 characters long; at most 1000 are allowed"),
            "{:?}",
            found[0]
        );
    }

    #[test]
    fn column_names_are_measured_as_stored_and_in_all() {
        let spaces = " ".repeat(MAX_COLUMN_NAME);
        let found = problems(&format!(
            "Serial Number,Product Name,Input Image Urls,x{spaces}\n1,A,http://x.io/a,v\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].message.contains("is 1001 characters long"),
            "{found:?}"
        );
        let wide: String = (0..101)
            .map(|i| format!(",c{i}{}", "n".repeat(995)))
            .collect();
        let found = problems(&format!(
            "Serial Number,Product Name,Input Image Urls{wide}\n1,A,http://x.io/a\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p.message.ends_with("at most 100000 are allowed")),
            "{found:?}"
        );
    }

    #[test]
    fn a_header_of_too_many_columns_is_one_problem() {
        let mut header = "Serial Number,Product Name,Input Image Urls".to_owned();
        header.push_str(&",x".repeat(MAX_COLUMNS));
        let found = problems(&format!("{header}\n1,A,http://x.io/a\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].message,
            format!(
                "the header row has {} columns; at most {MAX_COLUMNS} are allowed",
                MAX_COLUMNS + 3
            )
        );
    }

    /// Lines end at `\n`, `\r\n` or a lone `\r` (the old Mac export) alike.
    #[test]
    fn lines_are_counted_whatever_ends_them() {
        for end in ["\n", "\r\n", "\r"] {
            let input = [
                "Serial Number,Product Name,Input Image Urls",
                "1,,http://x.io/a",
                "",
                "2,B,\"http://x.io/b,",
                "http://x.io/c\"",
                "2,C,http://x.io/d",
                "",
            ]
            .join(end);
            let found = problems(&input);
            let at: Vec<u64> = found.iter().map(|p| p.line).collect();
            assert_eq!(at, [2, 6], "{end:?}: {found:?}");
            assert!(found[1].message.contains("line 4"), "{end:?}: {found:?}");
        }
        let bad = [
            b"Serial Number,Product Name,Input Image Urls\r1,A,".as_slice(),
            &[0xff],
        ]
        .concat();
        assert_eq!(problems_with(&bad, &CsvLimits::default())[0].line, 2);
    }

    /// A reply lists only the first problems: the ones about the whole file come first.
    #[test]
    fn problems_about_the_whole_file_come_first() {
        let limits = CsvLimits {
            max_rows: 2,
            max_urls_per_row: 2,
        };
        let mut input = HEADER.to_owned();
        for i in 1..=1500 {
            input.push_str(&format!("{i},,http://x.io/{i}\n"));
        }
        let found = problems_with(input.as_bytes(), &limits);
        assert!(
            found[0].message.starts_with("too many product rows"),
            "{:?}",
            found[0]
        );
        assert!(
            found[1].message.starts_with("more than 1000 problems"),
            "{:?}",
            found[1]
        );
        assert_eq!(found[2].line, 2);
        assert!(found.windows(2).skip(2).all(|w| w[0].line <= w[1].line));
    }

    #[test]
    fn duplicate_serial_names_both_lines() {
        let found = problems(&format!(
            "{HEADER}7,A,http://x.io/a\n8,B,http://x.io/b\n 7 ,C,http://x.io/c\n"
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].line, found[0].column.as_deref()),
            (4, Some("Serial Number"))
        );
        assert!(found[0].message.contains("line 2"), "{}", found[0].message);
    }

    #[test]
    fn bad_urls() {
        let long = format!("https://example.com/{}", "a".repeat(2049 - 20));
        assert_eq!(long.len(), 2049);
        let ok_len = &long[..2048];
        assert!(ImageUrl::parse(ok_len).is_ok());
        let cases = [
            ("ftp://example.com/a.jpg", "scheme"),
            ("/images/a.jpg", "absolute"),
            ("example.com/a.jpg", "absolute"),
            ("https://", "host"),
            ("http://exa mple.com/a", "host"),
            (long.as_str(), "2049"),
        ];
        for (url, expected) in cases {
            let found = problems(&format!("{HEADER}1,A,\"{url}\"\n"));
            assert_eq!(found.len(), 1, "{url}: {found:?}");
            assert_eq!(found[0].line, 2);
            assert_eq!(found[0].column.as_deref(), Some("Input Image Urls"));
            assert!(
                found[0].message.contains(expected),
                "{url}: {}",
                found[0].message
            );
        }
        // Two URLs on separate lines of one cell must not be glued together.
        let found = problems(&format!("{HEADER}1,A,\"http://x.io/a\nhttp://x.io/b\"\n"));
        assert!(found[0].message.contains("commas"), "{}", found[0].message);
        let found = problems(&format!("{HEADER}1,A,\"http://x.io/a http://x.io/b\"\n"));
        assert!(found[0].message.contains("commas"), "{}", found[0].message);
        // Only the bad position is reported; 2 and 3 are numbered from 1.
        let found = problems(&format!("{HEADER}1,A,http://x.io/a,ftp://x.io/b,nope\n"));
        assert_eq!(found.len(), 2);
        assert!(found[0].message.starts_with("image URL 2 "));
        assert!(found[1].message.starts_with("image URL 3 "));
    }

    #[test]
    fn image_url_normalises_and_revalidates_on_deserialise() {
        let url = ImageUrl::parse(" HTTPS://Example.COM/a b.jpg ").unwrap();
        assert_eq!(url.as_str(), "https://example.com/a%20b.jpg");
        assert_eq!(ImageUrl::parse(url.as_str()).unwrap(), url);
        assert!(ImageUrl::try_from("ftp://x.io/a".to_owned()).is_err());
        assert_eq!(ImageUrl::try_from(url.to_string()).unwrap(), url);
    }

    #[test]
    fn empty_name_serial_and_urls() {
        let found = problems(&format!(
            "{HEADER}1, ,http://x.io/a\n  ,B,http://x.io/b\n3,C, , \n"
        ));
        let got: Vec<_> = found
            .iter()
            .map(|p| (p.line, p.column.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            got,
            [
                (2, "Product Name"),
                (3, "Serial Number"),
                (4, "Input Image Urls")
            ]
        );
    }

    #[test]
    fn the_url_cell_keeps_the_urls_as_written() {
        let parsed = parse_ok(&format!(
            "{HEADER}1,A,\" HTTP://Example.COM/a b.jpg ,,https://x.io/%7e\"\n"
        ));
        let row = &parsed.rows[0];
        assert_eq!(
            urls(row),
            ["http://example.com/a%20b.jpg", "https://x.io/%7e"]
        );
        assert_eq!(
            row.cells.to_vec()[2],
            "HTTP://Example.COM/a b.jpg,https://x.io/%7e"
        );
    }

    #[test]
    fn nul_in_serial_or_name_is_a_problem_of_its_cell() {
        let found = problems(&format!(
            "{HEADER}1\0,A,http://x.io/a\n2,B\0B,http://x.io/b\n3,C,http://x.io/c\n"
        ));
        let got: Vec<_> = found
            .iter()
            .map(|p| {
                (
                    p.line,
                    p.column.as_deref().unwrap_or(""),
                    p.message.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    2,
                    "Serial Number",
                    "the serial number contains a NUL character (U+0000), which cannot be stored"
                ),
                (
                    3,
                    "Product Name",
                    "the product name contains a NUL character (U+0000), which cannot be stored"
                )
            ]
        );
    }

    #[test]
    fn non_utf8_reports_line_of_first_invalid_byte() {
        let mut input = format!("{HEADER}1,A,http://x.io/a\n2,").into_bytes();
        input.extend_from_slice(b"caf\xe9,http://x.io/b\n4,\xff,http://x.io/c\n");
        let found = problems_with(&input, &CsvLimits::default());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].column.as_deref()), (3, None));
        assert!(found[0].message.contains("UTF-8"));
    }

    #[test]
    fn every_bad_row_is_reported() {
        let found = problems(&format!(
            "{HEADER}1,A,http://x.io/a\n\
             2,,http://x.io/b\n\
             3,C,http://x.io/c\n\
             ,D,http://x.io/d\n\
             \n\
             5,E,mailto:x@y.z\n\
             6,F\n\
             7,G,http://x.io/g\n"
        ));
        let lines: Vec<u64> = found.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 5, 7, 8], "{found:#?}");
        assert_eq!(found[3].column, None);
    }

    #[test]
    fn row_and_url_limits() {
        let limits = CsvLimits {
            max_rows: 2,
            max_urls_per_row: 2,
        };
        let mut input = HEADER.to_owned();
        for i in 1..=4 {
            input.push_str(&format!("{i},P{i},http://x.io/{i}\n"));
        }
        let found = problems_with(input.as_bytes(), &limits);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 4);
        assert!(found[0].message.contains("has 4"), "{}", found[0].message);

        let input = format!("{HEADER}1,A,http://x.io/1,http://x.io/2,http://x.io/3\n");
        let found = problems_with(input.as_bytes(), &limits);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].line, found[0].column.as_deref()),
            (2, Some("Input Image Urls"))
        );
        let ok = parse(
            b"S.No,Product Name,Input Image Urls\n1,A,http://x.io/1,http://x.io/2\n",
            &limits,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn extra_and_missing_fields() {
        let header = "Serial Number,Input Image Urls,Product Name\n";
        let found = problems(&format!(
            "{header}1,http://x.io/a,http://x.io/b,A\n2,http://x.io/c\n"
        ));
        let got: Vec<_> = found.iter().map(|p| (p.line, p.column.clone())).collect();
        assert_eq!(got, [(2, None), (3, None)]);
        assert!(found[0].message.contains("quoted"), "{}", found[0].message);
        // Trailing empty cells (a spreadsheet's trailing commas) are harmless.
        let parsed = parse_ok(&format!("{header}1,http://x.io/a,A,,\n"));
        assert_eq!(parsed.rows[0].cells.to_vec(), ["1", "http://x.io/a", "A"]);
        // A header with a trailing comma keeps the URL column last.
        let parsed = parse_ok(
            "Serial Number,Product Name,Input Image Urls,\n1,A,http://x.io/a,http://x.io/b\n",
        );
        assert_eq!(parsed.header.len(), 3);
        assert_eq!(parsed.rows[0].urls.len(), 2);
    }

    #[test]
    fn multi_line_cell_keeps_line_numbers() {
        let input = "Serial Number,Product Name,Notes,Input Image Urls\n\
             1,A,\"first\nsecond\nthird\",http://x.io/a\n\
             2,,x,http://x.io/b\n\
             3,C,\"open\n,http://x.io/c\n";
        let found = problems(input);
        assert_eq!(found[0].line, 5, "{found:#?}");
        assert_eq!(found[0].column.as_deref(), Some("Product Name"));
        assert_eq!(found[1].line, 6);
        assert!(
            found[1].message.contains("double quote"),
            "{}",
            found[1].message
        );
        let parsed = parse_ok(
            &input
                .replace("2,,x", "2,B,x")
                .replace("3,C,\"open\n,", "3,C,ok,"),
        );
        assert_eq!(parsed.rows[0].cells.to_vec()[2], "first\nsecond\nthird");
        assert_eq!(parsed.rows[1].line, 5);
        assert_eq!(parsed.rows[2].line, 6);
    }

    #[test]
    fn empty_inputs() {
        for input in ["", "\n\n", "\u{feff}", " , ,\n"] {
            let found = problems(input);
            assert_eq!((found.len(), found[0].line), (1, 1), "{input:?}");
        }
        let found = problems(HEADER);
        assert!(found[0].message.contains("no product rows"));
        // Blank lines before the header are skipped but still counted.
        let parsed = parse_ok(&format!("\n\r\n{HEADER}1,A,http://x.io/a\n"));
        assert_eq!(parsed.rows[0].line, 4);
    }

    #[test]
    fn problems_are_capped() {
        let mut input = HEADER.to_owned();
        for i in 0..1500 {
            input.push_str(&format!("{i},,http://x.io/a\n"));
        }
        let found = problems(&input);
        assert_eq!(found.len(), super::super::problem::MAX_PROBLEMS + 1);
        // The note about the whole file first.
        assert_eq!(found[0].line, 1002);
        assert!(found[0].message.contains("stopped"));
        assert_eq!(found[1].line, 2);
    }
}
