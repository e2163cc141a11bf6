//! Writing the reports CI systems read (`--junit`, `--output`): where they may go, and whole
//! or not at all.

use std::path::Path;

/// A report can be written where it is asked for: its directory exists. Checked before a run,
/// so that a typo does not cost a whole sweep.
pub fn writable(paths: &[Option<&Path>]) -> Result<(), String> {
    for path in paths.iter().flatten() {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "cannot write a report to {}: the directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        if path.is_dir() {
            return Err(format!(
                "cannot write a report to {}: it is a directory",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Writes each report whole or not at all: to a file beside it, then renamed over it, so a CI
/// job never reads half a report.
pub fn write<'a>(reports: impl Iterator<Item = &'a (&'a Path, String)>) -> Result<(), String> {
    for (path, text) in reports {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write a report to {}: {e}", path.display())
            })?;
    }
    Ok(())
}
