//! Problems found in an upload, and a bounded collector for them.

use std::fmt;

/// Most problems kept for one file: a broken file (wrong delimiter, wrong
/// encoding) can otherwise produce one per cell and use a lot of memory.
pub const MAX_PROBLEMS: usize = 1000;

/// One problem found in an uploaded CSV, precise enough for the merchant to
/// find and fix it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CsvProblem {
    /// Physical line in the file, 1-based, header = line 1. For a row with a
    /// quoted multi-line cell, the line where the row starts.
    pub line: u64,
    /// Header name of the column concerned (as written, trimmed), or `None`
    /// when the problem is about the whole row or file.
    pub column: Option<String>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for CsvProblem {
    /// `line 3, column "Product Name": ...`, for logs and plain-text replies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(
                f,
                "line {}, column \"{}\": {}",
                self.line, column, self.message
            ),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// Collects problems up to [`MAX_PROBLEMS`], then remembers where it stopped.
#[derive(Debug, Default)]
pub(super) struct Problems {
    list: Vec<CsvProblem>,
    /// Problems about the whole file (too many rows), listed first.
    summaries: Vec<CsvProblem>,
    /// Line of the first problem that did not fit.
    stopped_at: Option<u64>,
}

impl Problems {
    /// Records a problem, or notes that the list is full.
    pub(super) fn push(&mut self, line: u64, column: Option<&str>, message: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(CsvProblem {
                line,
                column: column.map(str::to_owned),
                message,
            });
        } else if self.stopped_at.is_none() {
            self.stopped_at = Some(line);
        }
    }

    /// Records a problem even when the list is full: for the few summary
    /// problems added once at the end.
    pub(super) fn push_always(&mut self, line: u64, column: Option<&str>, message: String) {
        self.summaries.push(CsvProblem {
            line,
            column: column.map(str::to_owned),
            message,
        });
    }

    /// True once a problem had to be dropped: the caller stops reading.
    pub(super) fn is_full(&self) -> bool {
        self.stopped_at.is_some()
    }

    /// True when nothing is wrong so far.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty() && self.summaries.is_empty() && self.stopped_at.is_none()
    }

    /// The problems about the whole file (too many rows; checking stopped after
    /// [`MAX_PROBLEMS`]) first, then the others in line order: a reply that lists only
    /// the first problems still says what matters most.
    pub(super) fn finish(mut self) -> Vec<CsvProblem> {
        self.list.sort_by_key(|p| p.line);
        let mut all = self.summaries;
        if let Some(line) = self.stopped_at {
            all.push(CsvProblem {
                line,
                column: None,
                message: format!(
                    "more than {MAX_PROBLEMS} problems; checking stopped at this line. \
                     Fix the problems listed and upload the file again"
                ),
            });
        }
        all.append(&mut self.list);
        all
    }
}
