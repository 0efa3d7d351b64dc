//! `sft-search plot`: one SVG or PNG file per plot of the study; plots without enough data
//! are skipped with a note.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::common::{open_existing, print_out, shown, OpenStudy};
use super::UsageError;
use crate::cli::{ImageFormat, PlotArgs};
use crate::report::render::PlotSet;
use crate::report::{ReportError, StudyData};

/// The folder beside the study file (or database) where a study's outputs go by default.
pub fn default_dir(open: &OpenStudy, target: &Path) -> PathBuf {
    let base = match &open.config {
        Some(c) => c.dir.clone(),
        None => target.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    }
}

pub fn run(args: &PlotArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let open = open_existing(&args.study, args.study_name.as_deref())?;
    let contour = match args.params.as_deref() {
        None => None,
        Some([a, b]) => Some((a.as_str(), b.as_str())),
        Some(other) => return Err(UsageError(format!("--params takes two parameter names, `a,b` (got {})", other.len())).into()),
    };
    let data = StudyData::load(&open.store, &open.study, open.config.as_ref())?;
    let plots = PlotSet::compute(&data, contour).map_err(|e| match e {
        ReportError::UnknownParam { .. } => anyhow::Error::new(UsageError(e.to_string())),
        e => e.into(),
    })?;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => default_dir(&open, &args.study).join(format!("{}-plots", open.study.name)),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut text = String::new();
    for item in &plots.items {
        match &item.plot {
            Ok(p) => {
                let path = match args.format {
                    ImageFormat::Svg => {
                        let path = out.join(format!("{}.svg", item.stem));
                        let svg = p.to_svg(&item.stem)?;
                        crate::report::html::write_atomically(&path, svg.as_bytes())?;
                        path
                    }
                    ImageFormat::Png => {
                        let path = out.join(format!("{}.png", item.stem));
                        p.to_png(&item.stem, &path)?;
                        path
                    }
                };
                text.push_str(&format!("{}\n", shown(&path)));
            }
            Err(e) => {
                // A file left from an earlier call would no longer match the study.
                let ext = match args.format {
                    ImageFormat::Svg => "svg",
                    ImageFormat::Png => "png",
                };
                let stale = out.join(format!("{}.{ext}", item.stem));
                if stale.is_file() {
                    std::fs::remove_file(&stale).with_context(|| format!("removing the outdated {}", stale.display()))?;
                }
                if !quiet {
                    eprintln!("skipped {}: {e}", item.stem);
                }
            }
        }
    }
    print_out(&text)?;
    Ok(ExitCode::SUCCESS)
}
