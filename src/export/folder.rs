//! Writing an output folder so that a crash never leaves half of one: everything goes into a
//! temporary sibling folder, renamed into place at the end. With `force`, an existing folder is
//! first renamed aside and removed only once the new one is in place.

use std::path::{Path, PathBuf};

/// Why the output folder could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{0} exists and is not empty; pass --force to replace it")]
    Exists(PathBuf),
    #[error("{0} exists and is not a folder")]
    NotAFolder(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io { path: path.to_path_buf(), source }
}

/// Whether `dir` exists and holds anything.
fn non_empty(dir: &Path) -> Result<bool, FolderError> {
    Ok(std::fs::read_dir(dir).map_err(io(dir))?.next().is_some())
}

/// The sibling of `dest` named `.{name}.{tag}-{pid}`.
fn sibling(dest: &Path, tag: &str) -> Result<PathBuf, FolderError> {
    let name = dest.file_name().map(|s| s.to_string_lossy().into_owned()).ok_or_else(|| FolderError::NotAFolder(dest.to_path_buf()))?;
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(parent.join(format!(".{name}.{tag}-{}", std::process::id())))
}

/// Checks that `dest` may be written: absent, an empty folder, or (with `force`) any folder.
pub fn check_dest(dest: &Path, force: bool) -> Result<(), FolderError> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FolderError::Io { path: dest.to_path_buf(), source: e }),
        Ok(m) if !m.is_dir() => Err(FolderError::NotAFolder(dest.to_path_buf())),
        Ok(_) if !force && non_empty(dest)? => Err(FolderError::Exists(dest.to_path_buf())),
        Ok(_) => Ok(()),
    }
}

/// Writes the folder `dest` through `fill`, which gets an empty temporary folder beside `dest`.
/// Refuses a non-empty `dest` without `force`. On an error from `fill` the temporary folder is
/// removed and `dest` is left as it was.
pub fn write_atomic<E: From<FolderError>>(dest: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    check_dest(dest, force)?;
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = sibling(dest, "tmp")?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    // Named after `dest`: the temporary name would only puzzle.
    std::fs::create_dir_all(&tmp).map_err(io(dest))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let result = replace(&tmp, dest);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(result?)
}

/// Renames `tmp` to `dest`; an existing `dest` is renamed aside first and removed after.
fn replace(tmp: &Path, dest: &Path) -> Result<(), FolderError> {
    if !dest.exists() {
        return std::fs::rename(tmp, dest).map_err(io(dest));
    }
    let old = sibling(dest, "old")?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    std::fs::rename(dest, &old).map_err(io(dest))?;
    if let Err(e) = std::fs::rename(tmp, dest) {
        // Put the old folder back so nothing is lost.
        let _ = std::fs::rename(&old, dest);
        return Err(FolderError::Io { path: dest.to_path_buf(), source: e });
    }
    std::fs::remove_dir_all(&old).map_err(io(&old))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill_with(name: &'static str) -> impl FnOnce(&Path) -> Result<(), FolderError> {
        move |d: &Path| std::fs::write(d.join(name), name).map_err(io(d))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn writes_new_and_empty_folders_and_refuses_non_empty_without_force() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("a/out");
        write_atomic(&out, false, fill_with("one")).unwrap();
        assert_eq!(names(&out), vec!["one"]);
        let e = write_atomic(&out, false, fill_with("two")).unwrap_err();
        assert!(matches!(e, FolderError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(names(&out), vec!["one"], "untouched");
        // An empty folder is fine without --force.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_atomic(&empty, false, fill_with("x")).unwrap();
        assert_eq!(names(&empty), vec!["x"]);
        // No temporary or old folders are left beside.
        assert_eq!(names(&root.path().join("a")), vec!["out"]);
    }

    #[test]
    fn force_replaces_the_whole_folder() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        write_atomic(&out, false, fill_with("one")).unwrap();
        write_atomic(&out, true, fill_with("two")).unwrap();
        assert_eq!(names(&out), vec!["two"], "old files are gone");
        assert_eq!(names(root.path()), vec!["out"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_folder_and_no_temporary() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        write_atomic(&out, false, fill_with("one")).unwrap();
        let e = write_atomic(&out, true, |d: &Path| {
            std::fs::write(d.join("half"), "x").map_err(io(d))?;
            Err(FolderError::NotAFolder(d.to_path_buf()))
        });
        assert!(e.is_err());
        assert_eq!(names(&out), vec!["one"]);
        assert_eq!(names(root.path()), vec!["out"]);
    }

    #[test]
    fn a_file_in_the_way_is_refused_even_with_force() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::write(&out, "x").unwrap();
        let e = write_atomic(&out, true, fill_with("one")).unwrap_err();
        assert!(matches!(e, FolderError::NotAFolder(_)), "{e}");
    }
}
