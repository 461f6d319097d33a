//! Which files a shard specification names: brace ranges
//! (`train-{000000..001281}.tar`), alternatives (`{train,extra}-0.tar`), a
//! single `.tar`, or a list file of such lines.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::super::DataError;

/// Most files one specification may name (a typo such as `{0..999999999}`
/// is refused before it fills the memory).
pub const MAX_SHARDS: usize = 1_000_000;

/// Whether `spec` names tar shards (a brace pattern or a `.tar` path)
/// rather than an image folder or a list file.
pub(crate) fn is_pattern(spec: &str) -> bool {
    spec.contains(['{', '}']) || spec.to_ascii_lowercase().ends_with(".tar")
}

/// Expands every `{a..b}` (decimal range, either direction, zero-padded to
/// the wider end when either end has a leading zero, as bash and
/// WebDataset's `braceexpand` do) and `{x,y,…}` (alternatives) of
/// `pattern`, left to right.
///
/// ```
/// use ijepa_train::data::expand_braces;
///
/// assert_eq!(expand_braces("s-{08..10}.tar")?, ["s-08.tar", "s-09.tar", "s-10.tar"]);
/// assert_eq!(expand_braces("{a,b}{1..2}")?, ["a1", "a2", "b1", "b2"]);
/// # Ok::<(), ijepa_train::data::DataError>(())
/// ```
///
/// # Errors
/// Unbalanced or nested braces, an empty group, a range end that is not a
/// decimal number, or more than [`MAX_SHARDS`] results — each naming the
/// pattern.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    let bad = |reason: String| DataError::Shards(format!("{pattern:?}: {reason}"));
    let mut groups: Vec<Vec<String>> = vec![];
    let mut literal = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(bad("'}' without a '{' before it".into()));
        }
        let inner_end = rest[open + 1..]
            .find(['{', '}'])
            .map(|i| open + 1 + i)
            .filter(|&i| rest[i..].starts_with('}'));
        let Some(close) = inner_end else {
            return Err(bad(if rest[open + 1..].contains('}') {
                "nested braces are not supported".into()
            } else {
                "'{' without a closing '}'".into()
            }));
        };
        literal.push_str(&rest[..open]);
        groups.push(vec![std::mem::take(&mut literal)]);
        groups.push(alternatives(&rest[open + 1..close]).map_err(bad)?);
        rest = &rest[close + 1..];
    }
    groups.push(vec![rest.to_string()]);
    let total = groups
        .iter()
        .try_fold(1usize, |n, g| n.checked_mul(g.len()))
        .filter(|&n| n <= MAX_SHARDS);
    if total.is_none() {
        return Err(bad(format!("names more than {MAX_SHARDS} files")));
    }
    let mut out = vec![String::new()];
    for group in &groups {
        out = out
            .iter()
            .flat_map(|head| group.iter().map(move |g| format!("{head}{g}")))
            .collect();
    }
    Ok(out)
}

/// The values one `{…}` group stands for.
fn alternatives(group: &str) -> Result<Vec<String>, String> {
    if group.is_empty() {
        return Err("an empty '{}' group".into());
    }
    if !group.contains(',') {
        if let Some((a, b)) = group.split_once("..") {
            return range(a, b);
        }
        return Err(format!(
            "{{{group}}} is neither a range {{a..b}} nor alternatives {{x,y}}"
        ));
    }
    Ok(group.split(',').map(str::to_string).collect())
}

/// `{a..b}`: every integer from `a` to `b`, padded as the ends are.
fn range(a: &str, b: &str) -> Result<Vec<String>, String> {
    let number = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("range end {s:?} is not a decimal number"));
        }
        s.parse()
            .map_err(|_| format!("range end {s:?} is too large"))
    };
    let (lo, hi) = (number(a)?, number(b)?);
    if lo.abs_diff(hi) >= MAX_SHARDS as u64 {
        return Err(format!("names more than {MAX_SHARDS} files"));
    }
    let padded = |s: &str| s.len() > 1 && s.starts_with('0');
    let width = if padded(a) || padded(b) {
        a.len().max(b.len())
    } else {
        0
    };
    let values: Vec<u64> = if lo <= hi {
        (lo..=hi).collect()
    } else {
        (hi..=lo).rev().collect()
    };
    Ok(values.iter().map(|v| format!("{v:0width$}")).collect())
}

/// The shard files `spec` names: a brace pattern or `.tar` path, or a list
/// file with one such line each (blank lines and `#` comments skipped;
/// relative lines taken from the list's folder). A file named twice is
/// refused, since it would silently count its images twice.
///
/// # Errors
/// A pattern that does not expand, an unreadable list, or a file named
/// twice.
pub fn shard_paths(spec: &Path) -> Result<Vec<PathBuf>, DataError> {
    let text = spec.to_string_lossy();
    let paths: Vec<PathBuf> = if is_pattern(&text) {
        if spec.to_str().is_none() {
            return Err(DataError::Shards(format!(
                "{text:?}: a shard pattern must be valid UTF-8"
            )));
        }
        expand_braces(&text)?
            .into_iter()
            .map(PathBuf::from)
            .collect()
    } else {
        let io = |error| DataError::Io {
            path: spec.to_path_buf(),
            error,
        };
        let list = std::fs::read(spec).map_err(io)?;
        let list = String::from_utf8(list).map_err(|_| {
            DataError::Shards(format!(
                "{}: neither an image folder, a .tar shard nor a UTF-8 list of shards",
                spec.display()
            ))
        })?;
        let base = spec.parent().unwrap_or(Path::new(""));
        let mut paths = vec![];
        for (n, line) in list.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let expanded = expand_braces(line).map_err(|e| {
                DataError::Shards(format!("{} line {}: {e}", spec.display(), n + 1))
            })?;
            paths.extend(expanded.into_iter().map(|p| base.join(p)));
            if paths.len() > MAX_SHARDS {
                return Err(DataError::Shards(format!(
                    "{}: names more than {MAX_SHARDS} files",
                    spec.display()
                )));
            }
        }
        if paths.is_empty() {
            return Err(DataError::Shards(format!(
                "{}: the list names no shard",
                spec.display()
            )));
        }
        paths
    };
    let mut seen = HashSet::new();
    if let Some(twice) = paths.iter().find(|p| !seen.insert(p.as_path())) {
        return Err(DataError::Shards(format!(
            "{}: names {} twice (its images would count twice)",
            spec.display(),
            twice.display()
        )));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_as_written_and_run_either_way() {
        assert_eq!(
            expand_braces("train-{000..003}.tar").unwrap(),
            [
                "train-000.tar",
                "train-001.tar",
                "train-002.tar",
                "train-003.tar"
            ]
        );
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(expand_braces("{3..1}").unwrap(), ["3", "2", "1"]);
        assert_eq!(expand_braces("{7..7}").unwrap(), ["7"]);
        assert_eq!(expand_braces("{0..2}").unwrap(), ["0", "1", "2"]);
        assert_eq!(expand_braces("{1..010}").unwrap().len(), 10);
        assert_eq!(expand_braces("{1..010}").unwrap()[0], "001");
    }

    #[test]
    fn groups_multiply_left_to_right() {
        assert_eq!(
            expand_braces("/d/{a,b}/s{1..2}.tar").unwrap(),
            ["/d/a/s1.tar", "/d/a/s2.tar", "/d/b/s1.tar", "/d/b/s2.tar"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        assert_eq!(expand_braces("{x,}y").unwrap(), ["xy", "y"]);
    }

    #[test]
    fn malformed_patterns_are_refused_by_name() {
        for (pattern, expected) in [
            ("s-{0..3.tar", "without a closing"),
            ("s-}0.tar", "without a '{'"),
            ("s-{{0..3}}.tar", "nested"),
            ("s-{}.tar", "empty"),
            ("s-{a..3}.tar", "not a decimal number"),
            ("s-{-1..3}.tar", "not a decimal number"),
            ("s-{abc}.tar", "neither a range"),
            ("s-{0..99999999999}.tar", "more than 1000000"),
            ("{0..999}{0..999}{0..9}", "more than 1000000"),
            ("{0..99999999999999999999999}", "too large"),
        ] {
            let err = expand_braces(pattern).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains(pattern),
                "{pattern}: {err}"
            );
        }
    }

    #[test]
    fn a_list_file_names_shards_relative_to_itself_once_each() {
        let dir = std::env::temp_dir().join(format!("ijepa-shard-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("train.txt");
        std::fs::write(&list, "# train\n\na-{0..1}.tar\n/abs/b.tar\n").unwrap();
        assert_eq!(
            shard_paths(&list).unwrap(),
            [
                dir.join("a-0.tar"),
                dir.join("a-1.tar"),
                "/abs/b.tar".into()
            ]
        );
        std::fs::write(&list, "a.tar\nx/../a.tar\na.tar\n").unwrap();
        let err = shard_paths(&list).unwrap_err().to_string();
        assert!(
            err.contains("names") && err.contains("a.tar twice"),
            "{err}"
        );
        std::fs::write(&list, "a-{0..\n").unwrap();
        let err = shard_paths(&list).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("closing"), "{err}");
        std::fs::write(&list, "# nothing\n").unwrap();
        let err = shard_paths(&list).unwrap_err().to_string();
        assert!(err.contains("names no shard"), "{err}");
        std::fs::write(&list, [0xff, 0xfe, 0]).unwrap();
        let err = shard_paths(&list).unwrap_err().to_string();
        assert!(err.contains("neither an image folder"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
