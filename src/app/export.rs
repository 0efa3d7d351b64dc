//! `sft-search export`: writes the best (or a chosen) trial's kept checkpoint as a Hugging
//! Face model folder (`crate::export`), and says what it wrote.

use std::process::ExitCode;

use super::common::{open_existing, print_out, shown};
use super::UsageError;
use crate::cli::ExportArgs;
use crate::export::{export_trial, ExportError, FolderError};
use crate::scheduler::display::format_value;

fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn run(args: &ExportArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let open = open_existing(&args.study, args.study_name.as_deref())?;
    let s = export_trial(&open.store, &open.study, args.trial, &args.out, args.force).map_err(|e| match e {
        // What the user asked for cannot be done as asked: exit status 2.
        ExportError::Folder(FolderError::Exists(_) | FolderError::NotAFolder(_))
        | ExportError::NoSuchTrial { .. }
        | ExportError::NotComplete { .. } => anyhow::Error::new(UsageError(e.to_string())),
        other => anyhow::Error::new(other),
    })?;
    if !quiet {
        let value = s.value.map(format_value).unwrap_or_else(|| "-".into());
        let what = match &s.soup {
            Some(trials) => format!(
                "the model soup of trials {} (best trial {}, {} = {value} alone)",
                trials.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                s.trial,
                s.metric
            ),
            None => format!("trial {} ({} = {value})", s.trial, s.metric),
        };
        let mut text = format!("exported {what} of study `{}` from {}\nto {}:\n", s.study, shown(&s.checkpoint), shown(&s.out_dir));
        for (name, bytes) in &s.files {
            text.push_str(&format!("  {name:<26} {:>10}\n", size(*bytes)));
        }
        let (class, input) = if super::predict_tokens::is_token_model(&s.out_dir) {
            ("AutoModelForTokenClassification", "FILE.conll")
        } else {
            ("AutoModelForSequenceClassification", "FILE.csv")
        };
        text.push_str(&format!(
            "load it with transformers: {class}.from_pretrained(\"{0}\") and AutoTokenizer.from_pretrained(\"{0}\"), or run \
             `sft-search predict --model {0} --input {input}`\n",
            shown(&s.out_dir)
        ));
        print_out(&text)?;
    }
    Ok(ExitCode::SUCCESS)
}
