//! Source positions: the leaf every stage imports (syntax, checker, IR,
//! interpreter reports, diagnostics).

/// A byte range in the kernel's source file, for diagnostics (`0..0` when synthetic).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// A named source text (the name is what diagnostics print as the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    /// Set when the file was read from bytes that are not valid UTF-8
    /// ([`SourceFile::from_bytes`]): `text` is then a lossy copy (each bad
    /// sequence replaced by U+FFFD), identical to the bytes up to the first bad
    /// one, and the front end reports the file instead of checking it.
    pub invalid_utf8: Option<InvalidUtf8>,
}

/// The first byte of a source file that is not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8 {
    /// Byte offset in the file (and in the lossy `text`, which agrees with the
    /// file up to here).
    pub offset: usize,
    /// The offending byte.
    pub byte: u8,
    /// How many invalid sequences the file holds in all.
    pub count: usize,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
            invalid_utf8: None,
        }
    }

    /// A source file from raw bytes: the text when they are UTF-8, else a
    /// lossy copy with [`SourceFile::invalid_utf8`] saying where it went wrong.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => SourceFile::new(name, text),
            Err(e) => {
                let bytes = e.into_bytes();
                let offset = match std::str::from_utf8(&bytes) {
                    Err(u) => u.valid_up_to(),
                    Ok(_) => 0,
                };
                let count = bytes
                    .utf8_chunks()
                    .filter(|c| !c.invalid().is_empty())
                    .count();
                SourceFile {
                    name: name.into(),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    invalid_utf8: Some(InvalidUtf8 {
                        offset,
                        byte: bytes.get(offset).copied().unwrap_or(0),
                        count,
                    }),
                }
            }
        }
    }

    /// Read a file; bytes that are not UTF-8 are not an I/O error but are
    /// recorded in [`SourceFile::invalid_utf8`] (reported by the front end
    /// with their line and column).
    pub fn load(path: &std::path::Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        Ok(SourceFile::from_bytes(path.display().to_string(), bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bytes_records_the_first_bad_byte() {
        let ok = SourceFile::from_bytes("a", b"let x = 1;".to_vec());
        assert_eq!(ok, SourceFile::new("a", "let x = 1;"));
        let bad = SourceFile::from_bytes("b", b"ab\n// \xe9t\xe9\n".to_vec());
        assert_eq!(
            bad.invalid_utf8,
            Some(InvalidUtf8 {
                offset: 6,
                byte: 0xe9,
                count: 2
            })
        );
        assert_eq!(&bad.text[..6], "ab\n// ");
        assert!(bad.text[6..].starts_with('\u{FFFD}'));
    }
}
