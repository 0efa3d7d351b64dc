//! Reading raw rows from CSV, TSV (unquoted, as GLUE ships it) or JSON Lines, chosen by the
//! file extension. Rows keep their line and row numbers so later errors can point at them.
//!
//! Token classification ([`read_token_rows`]) reads sentences instead: CoNLL files (`.conll`,
//! `.iob`, `.bio`: a word and its tag per line, the tag in the last field, a blank line between
//! sentences, `-DOCSTART-` lines skipped) or JSON Lines whose text column is a list of words
//! and label column a list of tags. A sentence becomes one row whose text is its words joined
//! by single spaces and whose label is its tags joined the same way (words and tags may not
//! hold whitespace, so the split back is exact).

use std::path::Path;

use super::error::DataError;

/// One row as read: texts and the label exactly as they appear (label as text).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// 1-based line in the file (CSV/TSV: the header is line 1; a quoted field spanning lines
    /// reports the line it starts on).
    pub line: u64,
    /// 1-based data row (header not counted, blank JSONL lines not counted).
    pub row: usize,
    pub text: String,
    pub text_pair: Option<String>,
    /// `None` where the cell is empty or JSON `null`.
    pub label: Option<String>,
}

/// Which columns to read.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub text: &'a str,
    pub text_pair: Option<&'a str>,
    pub label: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Tsv,
    Jsonl,
    Conll,
}

fn format_of(path: &Path) -> Result<Format, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "csv" => Ok(Format::Csv),
        "tsv" | "tab" => Ok(Format::Tsv),
        "jsonl" | "ndjson" => Ok(Format::Jsonl),
        "conll" | "iob" | "bio" => Ok(Format::Conll),
        _ => Err(DataError::UnsupportedFormat { path: path.to_path_buf() }),
    }
}

/// Whether `path` is read as a CoNLL file (by its extension).
pub fn is_conll(path: &Path) -> bool {
    matches!(format_of(path), Ok(Format::Conll))
}

/// Reads every data row of `path` (no cleaning).
pub fn read_rows(path: &Path, cols: Columns<'_>) -> Result<Vec<RawRow>, DataError> {
    let format = format_of(path)?;
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let rows = match format {
        Format::Csv => read_delimited(path, &bytes, b',', true, cols)?,
        Format::Tsv => read_delimited(path, &bytes, b'\t', false, cols)?,
        Format::Jsonl => read_jsonl(path, &bytes, cols)?,
        Format::Conll => {
            return Err(DataError::Config(format!(
                "{} is a CoNLL file (a word and a tag per line): set problem = \"token_classification\" in [data]",
                path.display()
            )))
        }
    };
    if rows.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(rows)
}

fn read_delimited(path: &Path, bytes: &[u8], delim: u8, quoting: bool, cols: Columns<'_>) -> Result<Vec<RawRow>, DataError> {
    let parse_err = |e: csv::Error| {
        let line = e
            .position()
            .map(|p| 1 + bytes[..(p.byte() as usize).min(bytes.len())].iter().filter(|&&b| b == b'\n').count() as u64)
            .unwrap_or(0);
        DataError::Parse { path: path.to_path_buf(), line, message: e.to_string() }
    };
    let mut rdr = csv::ReaderBuilder::new().delimiter(delim).quoting(quoting).flexible(true).has_headers(true).from_reader(bytes);
    let headers = rdr.headers().map_err(parse_err)?.clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].trim().is_empty()) {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let present: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let find = |name: &str| {
        present.iter().position(|h| h == name || h.trim() == name).ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
            present: present.clone(),
        })
    };
    let ti = find(cols.text)?;
    let pi = cols.text_pair.map(find).transpose()?;
    let li = find(cols.label)?;
    let mut out = Vec::new();
    let mut rec = csv::StringRecord::new();
    let mut row = 0usize;
    // The csv crate's own line numbers skip blank lines and miscount CRLF, so lines are
    // counted here from the record's byte offset, moved past any line breaks before it.
    let (mut counted_to, mut line_at) = (0usize, 1u64);
    let mut line_of = |byte: usize| {
        let mut start = byte.min(bytes.len());
        while start < bytes.len() && (bytes[start] == b'\n' || bytes[start] == b'\r') {
            start += 1;
        }
        if start >= counted_to {
            line_at += bytes[counted_to..start].iter().filter(|&&b| b == b'\n').count() as u64;
            counted_to = start;
        }
        line_at
    };
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(parse_err(e)),
        }
        // A line of nothing but separators and spaces is no row.
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        row += 1;
        let line = rec.position().map(|p| line_of(p.byte() as usize)).unwrap_or(0);
        if rec.len() > headers.len() && rec.iter().skip(headers.len()).any(|f| !f.trim().is_empty()) {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "row {row} has {} fields but the header has {} (a text with an unquoted {:?}? quote it)",
                    rec.len(),
                    headers.len(),
                    delim as char
                ),
            });
        }
        let cell = |i: usize, name: &str| {
            rec.get(i).map(|s| s.to_string()).ok_or_else(|| {
                // A field that opens a quote and never closes it runs to the end of the file,
                // and the row then lacks its later fields: say so rather than only "no value".
                if rec.iter().any(|f| f.contains('\n')) {
                    let spans = rec.iter().map(|f| f.trim_end_matches(['\n', '\r']).matches('\n').count() as u64).sum::<u64>();
                    DataError::Parse {
                        path: path.to_path_buf(),
                        line,
                        message: format!(
                            "row {row} has no `{name}`: its fields run over {} lines, to line {}; is a quote (\") opened there and \
                             never closed?",
                            spans + 1,
                            line + spans
                        ),
                    }
                } else {
                    DataError::MissingValue { path: path.to_path_buf(), line, row, column: name.to_string() }
                }
            })
        };
        let text = cell(ti, cols.text)?;
        let text_pair = match (pi, cols.text_pair) {
            (Some(i), Some(name)) => Some(cell(i, name)?),
            _ => None,
        };
        let label = cell(li, cols.label)?;
        let label = if label.trim().is_empty() { None } else { Some(label) };
        out.push(RawRow { line, row, text, text_pair, label });
    }
    Ok(out)
}

fn json_scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// `bytes` as UTF-8 text without a byte-order mark; the error names the line of the first bad
/// byte.
pub fn utf8_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DataError::Parse {
        path: path.to_path_buf(),
        line: 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() as u64,
        message: format!("not UTF-8: {e}"),
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

fn read_jsonl(path: &Path, bytes: &[u8], cols: Columns<'_>) -> Result<Vec<RawRow>, DataError> {
    let text = utf8_text(path, bytes)?;
    let mut out = Vec::new();
    let mut row = 0usize;
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        row += 1;
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| DataError::Parse { path: path.to_path_buf(), line, message: e.to_string() })?;
        let obj = v.as_object().ok_or_else(|| DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: "expected a JSON object per line".into(),
        })?;
        let get = |name: &str| -> Result<Option<String>, DataError> {
            match obj.get(name) {
                Some(v) => Ok(json_scalar(v)),
                None if row == 1 => Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: name.to_string(),
                    present: obj.keys().cloned().collect(),
                }),
                None => Err(DataError::MissingValue { path: path.to_path_buf(), line, row, column: name.to_string() }),
            }
        };
        let text = get(cols.text)?.unwrap_or_default();
        let text_pair = match cols.text_pair {
            Some(name) => Some(get(name)?.unwrap_or_default()),
            None => None,
        };
        let label = get(cols.label)?.filter(|s| !s.trim().is_empty());
        out.push(RawRow { line, row, text, text_pair, label });
    }
    Ok(out)
}

/// Reads the sentences of a token-classification file (module doc): CoNLL, or JSON Lines
/// with `cols.text` a list of words and `cols.label` a list of tags (strings or integers).
pub fn read_token_rows(path: &Path, cols: Columns<'_>) -> Result<Vec<RawRow>, DataError> {
    let format = format_of(path)?;
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let text = utf8_text(path, &bytes)?;
    let rows = match format {
        Format::Conll => read_conll(path, text)?,
        Format::Jsonl => read_token_jsonl(path, text, cols)?,
        Format::Csv | Format::Tsv => {
            return Err(DataError::Config(format!(
                "{}: token classification reads CoNLL files (.conll, .iob, .bio: a word and its tag per line) or JSON Lines \
                 (.jsonl: a list of words and a list of tags per line), not CSV/TSV",
                path.display()
            )))
        }
    };
    if rows.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(rows)
}

/// Checks one sentence's words and tags and makes its row (module doc).
fn token_row(path: &Path, line: u64, row: usize, words: &[String], tags: &[String], tag_lines: &[u64]) -> Result<RawRow, DataError> {
    let err = |line: u64, message: String| DataError::Parse { path: path.to_path_buf(), line, message };
    if words.len() != tags.len() {
        return Err(err(line, format!("sentence {row} has {} words but {} tags", words.len(), tags.len())));
    }
    for (i, (w, t)) in words.iter().zip(tags).enumerate() {
        let at = tag_lines.get(i).copied().unwrap_or(line);
        if w.is_empty() || w.chars().any(char::is_whitespace) {
            return Err(err(at, format!("sentence {row}, word {}: {w:?} is empty or holds whitespace (one word per token)", i + 1)));
        }
        if t.is_empty() || t.chars().any(char::is_whitespace) {
            return Err(err(at, format!("sentence {row}, word {} ({w:?}): tag {t:?} is empty or holds whitespace", i + 1)));
        }
    }
    Ok(RawRow { line, row, text: words.join(" "), text_pair: None, label: Some(tags.join(" ")) })
}

/// One line of a CoNLL sentence: its 1-based line number and its fields (split at tabs and
/// spaces; the word first, the tag, when there is one, last).
pub type ConllLine<'a> = (u64, Vec<&'a str>);

/// The sentences of CoNLL text: runs of non-blank lines; a `-DOCSTART-` line ends a sentence
/// and is dropped.
pub fn conll_sentences(text: &str) -> Vec<Vec<ConllLine<'_>>> {
    let mut out = Vec::new();
    let mut cur: Vec<ConllLine<'_>> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let fields: Vec<&str> = l.split(['\t', ' ']).filter(|f| !f.is_empty()).collect();
        if fields.is_empty() || fields[0] == "-DOCSTART-" {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.push((i as u64 + 1, fields));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The entries of a JSON list of words or tags as text: strings, or numbers as written;
/// `Err` with a message naming `key` for anything else.
pub fn json_text_list(v: &serde_json::Value, key: &str) -> Result<Vec<String>, String> {
    let items = v.as_array().ok_or_else(|| format!("`{key}` must be a list (one entry per word), got {v}"))?;
    items
        .iter()
        .map(|x| match x {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("`{key}` holds {other}; expected strings or integers")),
        })
        .collect()
}

/// The labels of one multi-label cell: a JSON list (`["a", "b"]`, as JSON Lines lists arrive
/// too), or names separated by `separator`; each trimmed, empty ones dropped (an empty cell or
/// `[]` is a row with no label). `Err` says what is wrong with a list that does not parse.
pub fn label_list(raw: &str, separator: &str) -> Result<Vec<String>, String> {
    let t = raw.trim();
    let names = if t.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(t).map_err(|e| format!("`{t}` starts like a JSON list but is not one: {e}"))?;
        json_text_list(&v, "labels")?
    } else {
        t.split(separator).map(str::to_string).collect()
    };
    Ok(names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
}

fn read_conll(path: &Path, text: &str) -> Result<Vec<RawRow>, DataError> {
    conll_sentences(text)
        .into_iter()
        .enumerate()
        .map(|(i, sentence)| {
            let (mut words, mut tags, mut lines) = (Vec::new(), Vec::new(), Vec::new());
            for (line, fields) in sentence {
                if fields.len() < 2 {
                    return Err(DataError::Parse {
                        path: path.to_path_buf(),
                        line,
                        message: format!("expected a word and its tag separated by a tab, got {:?}", fields.join(" ")),
                    });
                }
                words.push(fields[0].to_string());
                tags.push(fields[fields.len() - 1].to_string());
                lines.push(line);
            }
            token_row(path, lines[0], i + 1, &words, &tags, &lines)
        })
        .collect()
}

fn read_token_jsonl(path: &Path, text: &str, cols: Columns<'_>) -> Result<Vec<RawRow>, DataError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i as u64 + 1;
        if l.trim().is_empty() {
            continue;
        }
        let row = out.len() + 1;
        let err = |message: String| DataError::Parse { path: path.to_path_buf(), line, message };
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| err(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| err("expected a JSON object per line".into()))?;
        let list = |name: &str| -> Result<Vec<String>, DataError> {
            let v = obj.get(name).ok_or_else(|| {
                if row == 1 {
                    DataError::MissingColumn { path: path.to_path_buf(), column: name.to_string(), present: obj.keys().cloned().collect() }
                } else {
                    DataError::MissingValue { path: path.to_path_buf(), line, row, column: name.to_string() }
                }
            })?;
            json_text_list(v, name).map_err(err)
        };
        let words = list(cols.text)?;
        let tags = list(cols.label)?;
        if words.is_empty() {
            // An empty sentence is dropped by cleaning, like an empty text.
            out.push(RawRow { line, row, text: String::new(), text_pair: None, label: Some(String::new()) });
            continue;
        }
        out.push(token_row(path, line, row, &words, &tags, &[])?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: Columns<'static> = Columns { text: "text", text_pair: None, label: "label" };

    fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn an_unquoted_comma_in_a_text_is_an_error_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "train.csv", "text,label\nfine film,1\ngood, but long,0\n");
        let msg = read_rows(&p, COLS).unwrap_err().to_string();
        assert!(msg.contains("train.csv") && msg.contains("3 fields") && msg.contains("unquoted"), "{msg}");
    }

    #[test]
    fn csv_tsv_jsonl_read_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(&dir, "a.csv", "text,label\n\"hello, world\",1\nbad \"film\",0\n");
        let tsv = write(&dir, "a.tsv", "text\tlabel\nhello, world\t1\nbad \"film\"\t0\n");
        let jsonl =
            write(&dir, "a.jsonl", "{\"text\": \"hello, world\", \"label\": 1}\n\n{\"text\": \"bad \\\"film\\\"\", \"label\": \"0\"}\n");
        let a = read_rows(&csv, COLS).unwrap();
        let b = read_rows(&tsv, COLS).unwrap();
        let c = read_rows(&jsonl, COLS).unwrap();
        let strip = |v: &[RawRow]| v.iter().map(|r| (r.text.clone(), r.label.clone())).collect::<Vec<_>>();
        assert_eq!(strip(&a), vec![("hello, world".into(), Some("1".into())), ("bad \"film\"".into(), Some("0".into()))]);
        assert_eq!(strip(&a), strip(&b));
        assert_eq!(strip(&a), strip(&c));
        assert_eq!((a[1].line, a[1].row), (3, 2));
        assert_eq!((c[1].line, c[1].row), (3, 2), "blank JSONL line counts as a line, not a row");
    }

    #[test]
    fn missing_column_lists_present_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "m.csv", "sentence,label\nhi,1\n");
        let e = read_rows(&p, COLS).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DataError::MissingColumn { .. }), "{msg}");
        assert!(msg.contains("m.csv") && msg.contains("`text`") && msg.contains("sentence, label"), "{msg}");
        let p = write(&dir, "m.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"txt\": \"b\", \"label\": 0}\n");
        let msg = read_rows(&p, COLS).unwrap_err().to_string();
        assert!(msg.contains("m.jsonl line 2 (row 2)") && msg.contains("`text`"), "{msg}");
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "b.csv", "\u{feff}text,label\r\ngood,1\r\n  ,  \r\n\r\nbad,0\r\n");
        let rows = read_rows(&p, COLS).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].text.as_str(), rows[1].line, rows[1].row), ("bad", 5, 2));
        let p = write(&dir, "c.csv", "text,label\n\"two\nlines\",1\n\n\nx,\n");
        let msg = read_rows(&p, COLS).map(|r| format!("{:?}", r.iter().map(|r| r.line).collect::<Vec<_>>()));
        assert_eq!(msg.unwrap(), "[2, 6]");
        let p = write(&dir, "b.jsonl", "\u{feff}{\"text\": \"x\", \"label\": null}\n");
        assert_eq!(read_rows(&p, COLS).unwrap()[0].label, None);
    }

    #[test]
    fn empty_and_unknown_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "e.csv", "");
        assert!(matches!(read_rows(&p, COLS), Err(DataError::Empty { .. })));
        let p = write(&dir, "h.csv", "text,label\n");
        assert!(matches!(read_rows(&p, COLS), Err(DataError::Empty { .. })));
        let p = write(&dir, "x.txt", "text,label\na,1\n");
        assert!(matches!(read_rows(&p, COLS), Err(DataError::UnsupportedFormat { .. })));
        let p = write(&dir, "short.csv", "text,label\nonly text\n");
        let msg = read_rows(&p, COLS).unwrap_err().to_string();
        assert!(msg.contains("line 2 (row 1)") && msg.contains("`label`"), "{msg}");
    }

    #[test]
    fn token_files_name_the_line_of_a_malformed_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let cols = Columns { text: "tokens", text_pair: None, label: "tags" };
        let p = write(&dir, "t.conll", "-DOCSTART- O\n\nJohn\tB-per\nlives\tO\n\nParis\n");
        let e = read_token_rows(&p, cols).unwrap_err().to_string();
        assert!(e.contains("t.conll line 6: expected a word and its tag"), "{e}");
        let p = write(&dir, "ok.conll", "-DOCSTART- O\n\nJohn\tB-per\nlives O\n\n\nParis\tB-loc\n");
        let rows = read_token_rows(&p, cols).unwrap();
        assert_eq!(rows.iter().map(|r| (r.line, r.text.as_str())).collect::<Vec<_>>(), vec![(3, "John lives"), (7, "Paris")]);
        assert_eq!(rows[0].label.as_deref(), Some("B-per O"));
        let p = write(&dir, "t.jsonl", "{\"tokens\": [\"a\"], \"tags\": [\"O\"]}\n{\"tokens\": \"a b\", \"tags\": [\"O\"]}\n");
        let e = read_token_rows(&p, cols).unwrap_err().to_string();
        assert!(e.contains("t.jsonl line 2: `tokens` must be a list"), "{e}");
    }
}
