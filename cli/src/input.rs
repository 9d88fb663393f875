//! Reading manifest files, folders and standard input, with the size limit
//! checked before anything is read into memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use haswarm_crds::manifest::{self, Limits, ManifestError, ParsedDocument};

/// A manifest's text and the name to show for it.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Why input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the file is {size} bytes; manifests are limited to {limit} bytes")]
    TooLarge {
        path: String,
        size: u64,
        limit: usize,
    },
    #[error("{path}: not UTF-8 text")]
    NotUtf8 { path: String },
    #[error("{path}: no manifests (.yaml, .yml, .json) in this folder{hint}")]
    EmptyDir { path: String, hint: &'static str },
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn read_limited(mut r: impl Read, name: &str, limit: usize) -> Result<String, InputError> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.by_ref()
        .take(cap)
        .read_to_end(&mut buf)
        .map_err(|source| InputError::Io {
            path: name.to_owned(),
            source,
        })?;
    if buf.len() > limit {
        return Err(InputError::TooLarge {
            path: name.to_owned(),
            size: u64::try_from(buf.len()).unwrap_or(u64::MAX),
            limit,
        });
    }
    String::from_utf8(buf).map_err(|_| InputError::NotUtf8 {
        path: name.to_owned(),
    })
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let io = |source| InputError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for e in entries {
        let p = e.path();
        // file_type does not follow symlinks, so a link loop cannot recurse forever.
        let ft = e.file_type().map_err(io)?;
        if ft.is_dir() {
            if recursive {
                collect_dir(&p, recursive, out)?;
            }
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads every manifest named by `paths`: files, folders (their manifests,
/// sorted; subfolders with `recursive`), and `-` for standard input.
pub fn load(
    paths: &[PathBuf],
    recursive: bool,
    limits: &Limits,
) -> Result<Vec<Source>, InputError> {
    let mut sources = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let text = read_limited(std::io::stdin().lock(), "<stdin>", limits.max_bytes)?;
            sources.push(Source {
                name: "<stdin>".into(),
                text,
            });
            continue;
        }
        let name = p.display().to_string();
        let meta = std::fs::metadata(p).map_err(|source| InputError::Io {
            path: name.clone(),
            source,
        })?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            collect_dir(p, recursive, &mut files)?;
            if files.is_empty() {
                return Err(InputError::EmptyDir {
                    path: name,
                    hint: if recursive {
                        ""
                    } else {
                        " (use -R to read subfolders)"
                    },
                });
            }
            files
        } else {
            vec![p.clone()]
        };
        for f in files {
            let fname = f.display().to_string();
            let io = |source| InputError::Io {
                path: fname.clone(),
                source,
            };
            let size = std::fs::metadata(&f).map_err(io)?.len();
            if size > u64::try_from(limits.max_bytes).unwrap_or(u64::MAX) {
                return Err(InputError::TooLarge {
                    path: fname,
                    size,
                    limit: limits.max_bytes,
                });
            }
            let file = std::fs::File::open(&f).map_err(io)?;
            let text = read_limited(file, &fname, limits.max_bytes)?;
            sources.push(Source { name: fname, text });
        }
    }
    Ok(sources)
}

/// Every document of every source, and every problem found while parsing.
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<ParsedDocument>,
    pub errors: Vec<ManifestError>,
}

/// Parses all sources, collecting problems from all of them rather than
/// stopping at the first file.
pub fn parse_all(sources: &[Source], limits: &Limits) -> Loaded {
    let mut loaded = Loaded::default();
    for s in sources {
        match manifest::parse(&s.name, &s.text, limits) {
            Ok(docs) => loaded.documents.extend(docs),
            Err(errs) => loaded.errors.extend(errs),
        }
    }
    loaded
}
