//! Input and output tables of `predict`: CSV, TSV (unquoted, as GLUE ships it — the same
//! rules as the training reader in `trainer::data::read`) or JSON Lines, by extension, with
//! every column kept so the output can repeat the input next to the predictions.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{0}: unsupported file type; use .csv, .tsv/.tab or .jsonl/.ndjson")]
    UnsupportedFormat(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Parse { path: PathBuf, line: u64, message: String },
    #[error("{path}: no column `{column}` (columns: {present})", present = present.join(", "))]
    MissingColumn { path: PathBuf, column: String, present: Vec<String> },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
    #[error("writing the output: {0}")]
    Write(String),
}

/// A table file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Tsv,
    Jsonl,
}

impl Format {
    /// The format of `path`, by extension.
    pub fn of(path: &Path) -> Result<Format, TableError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
        match ext.as_str() {
            "csv" => Ok(Format::Csv),
            "tsv" | "tab" => Ok(Format::Tsv),
            "jsonl" | "ndjson" => Ok(Format::Jsonl),
            _ => Err(TableError::UnsupportedFormat(path.to_path_buf())),
        }
    }
}

/// Rows with every column: CSV/TSV cells are strings; JSON Lines keep their values (`null`
/// where a row lacks a key that another row has).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub path: PathBuf,
    pub format: Format,
    /// In file order (JSON Lines: the order keys are first seen).
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Result<usize, TableError> {
        self.columns.iter().position(|c| c == name || c.trim() == name).ok_or_else(|| TableError::MissingColumn {
            path: self.path.clone(),
            column: name.to_string(),
            present: self.columns.clone(),
        })
    }

    /// A cell as text (`null` and missing cells are empty).
    pub fn text(&self, row: usize, col: usize) -> String {
        self.rows.get(row).and_then(|r| r.get(col)).map(cell_text).unwrap_or_default()
    }
}

/// A cell as it is written to CSV/TSV.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads every row and column of `path`.
pub fn read_table(path: &Path) -> Result<Table, TableError> {
    let format = Format::of(path)?;
    let bytes = std::fs::read(path).map_err(|source| TableError::Io { path: path.to_path_buf(), source })?;
    let (columns, rows) = match format {
        Format::Csv => read_delimited(path, &bytes, b',', true)?,
        Format::Tsv => read_delimited(path, &bytes, b'\t', false)?,
        Format::Jsonl => read_jsonl(path, &bytes)?,
    };
    if rows.is_empty() {
        return Err(TableError::Empty { path: path.to_path_buf() });
    }
    Ok(Table { path: path.to_path_buf(), format, columns, rows })
}

type Rows = (Vec<String>, Vec<Vec<Value>>);

fn read_delimited(path: &Path, bytes: &[u8], delim: u8, quoting: bool) -> Result<Rows, TableError> {
    let parse_err = |e: csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        TableError::Parse { path: path.to_path_buf(), line, message: e.to_string() }
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new().delimiter(delim).quoting(quoting).flexible(true).has_headers(true).from_reader(bytes);
    let columns: Vec<String> = rdr.headers().map_err(parse_err)?.iter().map(str::to_string).collect();
    if columns.iter().all(|c| c.trim().is_empty()) {
        return Err(TableError::Empty { path: path.to_path_buf() });
    }
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(parse_err)?;
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue; // blank line
        }
        if rec.len() > columns.len() && rec.iter().skip(columns.len()).any(|c| !c.trim().is_empty()) {
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            return Err(TableError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "this row has {} fields but the header has {} (a text with an unquoted {:?}? quote it)",
                    rec.len(),
                    columns.len(),
                    delim as char
                ),
            });
        }
        let mut row: Vec<Value> = rec.iter().take(columns.len()).map(|c| Value::String(c.to_string())).collect();
        row.resize(columns.len(), Value::Null);
        rows.push(row);
    }
    Ok((columns, rows))
}

fn read_jsonl(path: &Path, bytes: &[u8]) -> Result<Rows, TableError> {
    let text = std::str::from_utf8(bytes).map_err(|e| TableError::Parse { path: path.to_path_buf(), line: 0, message: e.to_string() })?;
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |message: String| TableError::Parse { path: path.to_path_buf(), line: i as u64 + 1, message };
        // Keep the keys in their written order (serde_json's Map sorts them).
        let obj: indexmap::IndexMap<String, Value> = serde_json::from_str(line).map_err(|e| err(format!("not a JSON object: {e}")))?;
        for k in obj.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        objects.push(obj);
    }
    let rows = objects.into_iter().map(|o| columns.iter().map(|c| o.get(c).cloned().unwrap_or(Value::Null)).collect()).collect();
    Ok((columns, rows))
}

/// Writes rows in `format`: a header line (CSV/TSV) then one line per row. JSON Lines keep
/// the column order and the values' types.
pub struct TableWriter<W: Write> {
    format: Format,
    columns: Vec<String>,
    csv: Option<csv::Writer<W>>,
    raw: Option<W>,
}

impl<W: Write> TableWriter<W> {
    pub fn new(out: W, format: Format, columns: Vec<String>) -> Result<Self, TableError> {
        let werr = |e: csv::Error| TableError::Write(e.to_string());
        match format {
            Format::Jsonl => Ok(TableWriter { format, columns, csv: None, raw: Some(out) }),
            Format::Csv | Format::Tsv => {
                let mut b = csv::WriterBuilder::new();
                if format == Format::Tsv {
                    b.delimiter(b'\t').quote_style(csv::QuoteStyle::Never);
                }
                let mut w = b.from_writer(out);
                w.write_record(&columns).map_err(werr)?;
                Ok(TableWriter { format, columns, csv: Some(w), raw: None })
            }
        }
    }

    pub fn write_row(&mut self, row: &[Value]) -> Result<(), TableError> {
        match (&mut self.csv, &mut self.raw) {
            (Some(w), _) => {
                let mut cells: Vec<String> = row.iter().map(cell_text).collect();
                if self.format == Format::Tsv {
                    // TSV has no quoting: a tab or line break inside a cell would split it.
                    for c in &mut cells {
                        if c.contains(['\t', '\n', '\r']) {
                            *c = c.replace("\r\n", " ").replace(['\t', '\n', '\r'], " ");
                        }
                    }
                }
                w.write_record(&cells).map_err(|e| TableError::Write(e.to_string()))
            }
            (None, Some(w)) => {
                let mut line = String::from("{");
                for (i, (c, v)) in self.columns.iter().zip(row).enumerate() {
                    if i > 0 {
                        line.push_str(", ");
                    }
                    line.push_str(&Value::String(c.clone()).to_string());
                    line.push_str(": ");
                    line.push_str(&v.to_string());
                }
                line.push_str("}\n");
                w.write_all(line.as_bytes()).map_err(|e| TableError::Write(e.to_string()))
            }
            (None, None) => Err(TableError::Write(format!("no writer for {:?}", self.format))),
        }
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> Result<W, TableError> {
        match (self.csv, self.raw) {
            (Some(w), _) => w.into_inner().map_err(|e| TableError::Write(e.to_string())),
            (None, Some(mut w)) => {
                w.flush().map_err(|e| TableError::Write(e.to_string()))?;
                Ok(w)
            }
            (None, None) => Err(TableError::Write("no writer".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn an_unquoted_comma_in_a_text_is_an_error_naming_the_line() {
        let d = tempfile::tempdir().unwrap();
        let err = read_table(&file(d.path(), "new.csv", "text\nfine film\nwhat a wonderful, moving film\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("new.csv") && msg.contains("2 fields") && msg.contains('3'), "{msg}");
    }

    #[test]
    fn reads_all_columns_of_csv_tsv_and_jsonl() {
        let d = tempfile::tempdir().unwrap();
        let t = read_table(&file(d.path(), "a.csv", "id,text,extra\n1,\"good, very\",x\n2,bad\n\n")).unwrap();
        assert_eq!(t.columns, vec!["id", "text", "extra"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!((t.text(0, 1), t.text(1, 1), t.text(1, 2)), ("good, very".into(), "bad".into(), String::new()));
        let t = read_table(&file(d.path(), "a.tsv", "sentence\tlabel\nit \"was\" ok\t1\n")).unwrap();
        assert_eq!(t.text(0, t.column("sentence").unwrap()), "it \"was\" ok");
        let t = read_table(&file(d.path(), "a.jsonl", "{\"z\": 1, \"text\": \"hi\"}\n\n{\"text\": \"yo\", \"k\": true}\n")).unwrap();
        assert_eq!(t.columns, vec!["z", "text", "k"], "first-seen order, not sorted");
        assert_eq!(t.rows[1], vec![Value::Null, json!("yo"), json!(true)]);
    }

    #[test]
    fn errors_name_the_problem() {
        let d = tempfile::tempdir().unwrap();
        let t = read_table(&file(d.path(), "a.csv", "a,b\n1,2\n")).unwrap();
        let e = t.column("text").unwrap_err().to_string();
        assert!(e.contains("no column `text`") && e.contains("a, b"), "{e}");
        let e = read_table(&file(d.path(), "a.txt", "x")).unwrap_err();
        assert!(matches!(e, TableError::UnsupportedFormat(_)));
        let e = read_table(&file(d.path(), "b.csv", "text\n")).unwrap_err();
        assert!(matches!(e, TableError::Empty { .. }), "{e}");
        let e = read_table(&file(d.path(), "b.jsonl", "{\"text\": 1}\n[1]\n")).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn writes_each_format() {
        let cols = vec!["text".to_string(), "p".to_string()];
        let rows = [vec![json!("a, b"), json!(0.5)], vec![json!("c"), json!(1)]];
        let mut outs = Vec::new();
        for f in [Format::Csv, Format::Tsv, Format::Jsonl] {
            let mut w = TableWriter::new(Vec::new(), f, cols.clone()).unwrap();
            for r in &rows {
                w.write_row(r).unwrap();
            }
            outs.push(String::from_utf8(w.finish().unwrap()).unwrap());
        }
        assert_eq!(outs[0], "text,p\n\"a, b\",0.5\nc,1\n");
        assert_eq!(outs[1], "text\tp\na, b\t0.5\nc\t1\n");
        assert_eq!(outs[2], "{\"text\": \"a, b\", \"p\": 0.5}\n{\"text\": \"c\", \"p\": 1}\n");
        // TSV cannot quote: a tab or line break in a text becomes a space, one row stays one line.
        let mut w = TableWriter::new(Vec::new(), Format::Tsv, cols.clone()).unwrap();
        w.write_row(&[json!("line one\r\nline\ttwo\n"), json!(1)]).unwrap();
        assert_eq!(String::from_utf8(w.finish().unwrap()).unwrap(), "text\tp\nline one line two \t1\n");
    }
}
