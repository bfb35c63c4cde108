//! The merchant-facing CSV format: reading an upload and writing the result.
//!
//! An upload is checked completely before any work starts, so a merchant sees
//! every problem of the file at once (with physical line numbers they can find
//! in a text editor or spreadsheet) instead of fixing them one per upload.
//! [`parse`] turns the bytes into a [`ParsedCsv`] that cannot hold an invalid
//! row, and [`write_output`] writes the same rows back with the output URLs,
//! guarding every cell against spreadsheet formula injection.
//!
//! Inside this module the external crate is spelled `::csv` because this
//! module is itself named `csv`.

mod parse;
mod problem;
mod write;

use std::fmt;

pub use parse::parse;
pub use problem::{CsvProblem, MAX_PROBLEMS};
pub use write::{CsvError, ImageOutcome, OutputRow, OutputWriter, sanitize_cell, write_output};

/// Longest accepted image URL, in characters (and in bytes once normalised):
/// longer URLs are almost always pasted garbage and some servers reject them.
const MAX_URL_LEN: usize = 2048;

/// Upper bounds on the size of an upload, so one request cannot monopolise
/// the workers or the database. Exceeding one is reported as a [`CsvProblem`].
#[derive(Clone, Copy, Debug)]
pub struct CsvLimits {
    /// Most product rows (data rows, header excluded) accepted in one file.
    pub max_rows: usize,
    /// Most image URLs accepted in one product row.
    pub max_urls_per_row: usize,
}

impl Default for CsvLimits {
    /// The limits of the specification: 100 000 rows, 50 URLs per row.
    fn default() -> Self {
        CsvLimits {
            max_rows: 100_000,
            max_urls_per_row: 50,
        }
    }
}

/// An input URL that passed the checks (absolute `http`/`https` with a host,
/// at most 2048 characters), stored in the `url` crate's normalised form.
///
/// The field is private so that every `ImageUrl` in the program went through
/// [`ImageUrl::parse`]; deserialising validates again for the same reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct ImageUrl(String);

impl ImageUrl {
    /// Checks one URL as written by a merchant (surrounding whitespace is
    /// ignored). The error is a human-readable reason that completes a
    /// sentence starting with the URL, e.g. `has no host name`.
    pub fn parse(s: &str) -> Result<ImageUrl, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("is empty".to_owned());
        }
        let len = s.chars().count();
        if len > MAX_URL_LEN {
            return Err(format!(
                "is {len} characters long; at most {MAX_URL_LEN} are allowed"
            ));
        }
        // The url crate silently drops tabs and line breaks, which would glue
        // two URLs written on separate lines into one valid-looking URL.
        if s.chars().any(char::is_control) {
            return Err("contains a line break, tab or other control character; \
                 separate URLs with commas"
                .to_owned());
        }
        if s.split_whitespace().skip(1).any(starts_like_url) {
            return Err(
                "looks like several URLs separated by spaces; separate URLs with commas".to_owned(),
            );
        }
        let url = url::Url::parse(s).map_err(describe_url_error)?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(format!(
                    "uses the \"{other}\" scheme; only http and https are allowed"
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host name".to_owned());
        }
        let normalised = String::from(url);
        if normalised.len() > MAX_URL_LEN {
            return Err(format!(
                "is longer than {MAX_URL_LEN} characters once percent-encoded"
            ));
        }
        Ok(ImageUrl(normalised))
    }

    /// The normalised URL text, ready to hand to an HTTP client.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageUrl {
    type Error = String;

    /// Lets serde re-check stored URLs instead of trusting them blindly.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ImageUrl::parse(&s).map_err(|reason| format!("invalid image URL: it {reason}"))
    }
}

impl fmt::Display for ImageUrl {
    /// Shows the normalised URL, as sent to the server.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a whitespace-separated token is the start of another URL.
fn starts_like_url(token: &str) -> bool {
    let lower = token.get(..8).unwrap_or(token).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Turns a `url` parse error into the end of a sentence a merchant understands.
fn describe_url_error(e: url::ParseError) -> String {
    use url::ParseError as E;
    match e {
        E::RelativeUrlWithoutBase => {
            "is not an absolute URL; it must start with http:// or https://".to_owned()
        }
        E::EmptyHost => "has no host name".to_owned(),
        E::InvalidPort => "has an invalid port number".to_owned(),
        E::InvalidIpv4Address | E::InvalidIpv6Address => "has an invalid IP address".to_owned(),
        E::IdnaError | E::InvalidDomainCharacter => "has an invalid host name".to_owned(),
        other => format!("is not a valid URL ({other})"),
    }
}

/// One product row of a valid upload, in input order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductRow {
    /// 0-based index among data rows, so results can be stored and written
    /// back in input order.
    pub row: u32,
    /// Physical line of the row in the uploaded file (header = line 1), for
    /// messages that point the merchant at the right place.
    pub line: u64,
    /// The serial number, trimmed; unique within the file.
    pub serial: String,
    /// The product name, trimmed; never empty.
    pub product_name: String,
    /// The row's image URLs in the order written; never empty.
    pub urls: Vec<ImageUrl>,
    /// Every cell in header order, as written, except that the
    /// `Input Image Urls` cell holds the comma-joined normalised URLs.
    /// This is what the output CSV repeats.
    pub cells: Cells,
}

/// A row's cells, held as the JSON array of strings they are stored as: a few bytes
/// a cell, where a `String` each cost 24 bytes for an empty one (a file of many wide
/// rows held some 25 times its size in memory, whole, before it was stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cells(String);

impl Cells {
    fn new<'a>(cells: impl Iterator<Item = &'a str>) -> Self {
        // A list of strings always serialises.
        Self(serde_json::to_string(&cells.collect::<Vec<_>>()).unwrap_or_default())
    }

    /// The JSON array, as stored.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<String> {
        serde_json::from_str(&self.0).expect("cells are a JSON array of strings")
    }
}

/// A parsed, valid upload: nothing inside can be invalid, so later stages
/// never re-check it.
#[derive(Clone, Debug)]
pub struct ParsedCsv {
    /// The header cells as written (BOM stripped), repeated in the output.
    pub header: Vec<String>,
    /// Index of the `Input Image Urls` column in `header` and in each row's
    /// `cells`.
    pub urls_column: usize,
    /// Whether the upload began with a UTF-8 byte order mark: the output repeats it.
    pub bom: bool,
    /// The product rows, in input order; never empty.
    pub rows: Vec<ProductRow>,
}

impl ParsedCsv {
    /// Number of images to process over all rows (for quotas and progress).
    pub fn image_count(&self) -> usize {
        self.rows.iter().map(|r| r.urls.len()).sum()
    }
}
