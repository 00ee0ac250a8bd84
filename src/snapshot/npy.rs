//! The subset of NumPy's `.npy` format the snapshot contract uses: little-endian float32,
//! C order, two dimensions (and int32 matrices of row ids, for the ANN benchmark's ground
//! truth). Parsed by hand so that a wrong dtype or shape is reported in the contract's own words
//! rather than as a generic decoding error.

use std::io::{self, Read, Write};

use ndarray::Array2;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// A matrix element type this module reads and writes: 4 bytes, stored little endian.
pub trait Element: bytemuck::Pod {
    /// The little-endian dtype string numpy writes, e.g. `<f4`.
    const DESCR: &'static str;
    /// How numpy names the type, for messages.
    const NAME: &'static str;
    fn to_le_bytes(self) -> [u8; 4];
    /// Converts a value read as little-endian bytes to native order.
    fn le_to_native(self) -> Self;
}

impl Element for f32 {
    const DESCR: &'static str = "<f4";
    const NAME: &'static str = "float32";
    fn to_le_bytes(self) -> [u8; 4] {
        f32::to_le_bytes(self)
    }
    fn le_to_native(self) -> Self {
        f32::from_bits(u32::from_le(self.to_bits()))
    }
}

impl Element for i32 {
    const DESCR: &'static str = "<i4";
    const NAME: &'static str = "int32";
    fn to_le_bytes(self) -> [u8; 4] {
        i32::to_le_bytes(self)
    }
    fn le_to_native(self) -> Self {
        i32::from_le(self)
    }
}

/// Writes `matrix` as a version 1.0 `.npy` file body (`<f4`, C order), as `numpy.save` does.
pub fn write_f32_matrix<W: Write>(out: &mut W, matrix: &Array2<f32>) -> io::Result<()> {
    write_matrix(out, matrix)
}

/// Writes `matrix` as a version 1.0 `.npy` file body (`<i4`, C order), as `numpy.save` does.
pub fn write_i32_matrix<W: Write>(out: &mut W, matrix: &Array2<i32>) -> io::Result<()> {
    write_matrix(out, matrix)
}

fn write_matrix<W: Write, T: Element>(out: &mut W, matrix: &Array2<T>) -> io::Result<()> {
    let (rows, cols) = matrix.dim();
    let descr = T::DESCR;
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is padded to 64 bytes.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    out.write_all(MAGIC)?;
    out.write_all(&[1, 0])?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let mut buf = Vec::with_capacity(cols * 4);
    for row in matrix.rows() {
        buf.clear();
        for v in row {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        out.write_all(&buf)?;
    }
    Ok(())
}

/// Longest header accepted: numpy's own reader refuses headers over 10,000 bytes by default;
/// the margin only guards against reading a corrupt length as a huge allocation.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// The header of an `.npy` file, as written by `numpy.save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The dtype, e.g. `<f4`.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

/// A defect of an `.npy` file. `field` names the header entry at fault (`magic`, `header`,
/// `descr`, `fortran_order`, `shape`) when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NpyError {
    pub field: Option<&'static str>,
    pub message: String,
}

impl NpyError {
    fn new(field: Option<&'static str>, message: impl Into<String>) -> NpyError {
        NpyError {
            field,
            message: message.into(),
        }
    }
}

/// Reads the magic string, version and header dictionary (versions 1.0, 2.0 and 3.0).
/// Returns the header and every byte consumed, so that callers can hash the whole file.
pub fn read_header<R: Read>(r: &mut R) -> Result<(Header, Vec<u8>), NpyError> {
    let mut raw = vec![0u8; 8];
    read_exact(r, &mut raw, "the file is too short to be an .npy file")?;
    if &raw[..6] != MAGIC {
        return Err(NpyError::new(
            Some("magic"),
            "not an .npy file (missing the \\x93NUMPY magic string); write it with numpy.save",
        ));
    }
    let (major, minor) = (raw[6], raw[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(NpyError::new(
                Some("version"),
                format!("unsupported .npy version {major}.{minor} (1.0, 2.0 and 3.0 are read)"),
            ));
        }
    };
    let mut len_buf = [0u8; 4];
    read_exact(
        r,
        &mut len_buf[..len_bytes],
        "the file ends inside the header",
    )?;
    raw.extend_from_slice(&len_buf[..len_bytes]);
    let header_len = u32::from_le_bytes(len_buf) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(NpyError::new(
            Some("header"),
            format!("implausible header length {header_len} bytes"),
        ));
    }
    let start = raw.len();
    raw.resize(start + header_len, 0);
    read_exact(r, &mut raw[start..], "the file ends inside the header")?;
    let bytes = &raw[start..];
    // Versions 1 and 2 store the header in latin-1, version 3 in UTF-8.
    let text: String = if major == 3 {
        std::str::from_utf8(bytes)
            .map_err(|_| NpyError::new(Some("header"), "header is not valid UTF-8"))?
            .to_string()
    } else {
        bytes.iter().map(|&b| b as char).collect()
    };
    let header = parse_header_dict(&text)?;
    Ok((header, raw))
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], eof_message: &str) -> Result<(), NpyError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            NpyError::new(Some("header"), eof_message)
        } else {
            NpyError::new(None, format!("cannot read: {e}"))
        }
    })
}

impl Header {
    /// Checks that this header describes what the snapshot contract allows: a little-endian
    /// float32 matrix in C order. Returns `(rows, cols)`.
    pub fn f32_matrix_shape(&self) -> Result<(usize, usize), NpyError> {
        self.matrix_shape::<f32>()
    }

    /// Checks that this header describes a little-endian `T` matrix in C order. Returns
    /// `(rows, cols)`.
    pub fn matrix_shape<T: Element>(&self) -> Result<(usize, usize), NpyError> {
        if self.descr != T::DESCR {
            let (name, want) = (T::NAME, T::DESCR);
            let big_endian = want.replacen('<', ">", 1);
            let hint = if self.descr == big_endian {
                format!("big-endian {name}; export with `arr.astype('{want}')`")
            } else {
                format!("not {name}; export with `arr.astype(numpy.{name})`")
            };
            return Err(NpyError::new(
                Some("descr"),
                format!(
                    "dtype `{}` is {hint} (the contract requires `{want}`)",
                    self.descr
                ),
            ));
        }
        if self.fortran_order {
            return Err(NpyError::new(
                Some("fortran_order"),
                "array is in Fortran order; export a C-order array \
                 (`numpy.ascontiguousarray(arr)`)",
            ));
        }
        match self.shape[..] {
            [rows, cols] => Ok((rows, cols)),
            _ => Err(NpyError::new(
                Some("shape"),
                format!(
                    "shape {} is {}-D, expected a 2-D array (rows, dim)",
                    shape_str(&self.shape),
                    self.shape.len()
                ),
            )),
        }
    }
}

/// Formats a shape the way Python prints tuples: `(3,)`, `(3, 4)`.
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Bytes of `rows × cols` float32 values, or `None` if that overflows `usize`.
pub fn f32_data_len(rows: usize, cols: usize) -> Option<usize> {
    rows.checked_mul(cols)?.checked_mul(4)
}

/// Reads `n` little-endian values straight into a vector (no intermediate byte buffer).
fn read_values<R: Read, T: Element>(r: &mut R, n: usize) -> io::Result<Vec<T>> {
    let mut values = vec![T::zeroed(); n];
    r.read_exact(bytemuck::cast_slice_mut(&mut values))?;
    if cfg!(target_endian = "big") {
        for v in &mut values {
            *v = v.le_to_native();
        }
    }
    Ok(values)
}

/// Reads `n` little-endian float32 values straight into a vector (no intermediate byte buffer).
/// `on_bytes` sees the bytes as read from `r`, before any byte-order conversion (to hash them).
pub fn read_f32_values<R: Read>(
    r: &mut R,
    n: usize,
    on_bytes: impl FnOnce(&[u8]),
) -> io::Result<Vec<f32>> {
    let mut values = vec![0f32; n];
    r.read_exact(bytemuck::cast_slice_mut(&mut values))?;
    on_bytes(bytemuck::cast_slice(&values));
    if cfg!(target_endian = "big") {
        for v in &mut values {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
    }
    Ok(values)
}

/// Reads a whole `.npy` file holding a little-endian float32 C-order matrix, rejecting
/// anything else, including truncated files and bytes after the data.
pub fn read_f32_matrix<R: Read>(r: R) -> Result<Array2<f32>, NpyError> {
    read_matrix(r)
}

/// Reads a whole `.npy` file holding a little-endian int32 C-order matrix, as
/// [`read_f32_matrix`] does for float32.
pub fn read_i32_matrix<R: Read>(r: R) -> Result<Array2<i32>, NpyError> {
    read_matrix(r)
}

fn read_matrix<R: Read, T: Element>(mut r: R) -> Result<Array2<T>, NpyError> {
    let (header, _) = read_header(&mut r)?;
    let (rows, cols) = header.matrix_shape::<T>()?;
    // Both element types are 4 bytes wide, as `f32_data_len` counts.
    let n = rows
        .checked_mul(cols)
        .filter(|_| f32_data_len(rows, cols).is_some())
        .ok_or_else(|| NpyError::new(Some("shape"), "shape is too large"))?;
    let values = read_values::<_, T>(&mut r, n).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            NpyError::new(
                None,
                "the file is truncated: fewer data bytes than the shape needs",
            )
        } else {
            NpyError::new(None, format!("cannot read: {e}"))
        }
    })?;
    let mut extra = [0u8; 1];
    match r.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(NpyError::new(None, "extra bytes after the data")),
        Err(e) => return Err(NpyError::new(None, format!("cannot read: {e}"))),
    }
    Ok(Array2::from_shape_vec((rows, cols), values).expect("length checked"))
}

/// A value of the Python literal subset `numpy.save` headers use.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Int(u64),
    None,
    /// Tuples and lists.
    Seq(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

fn parse_header_dict(text: &str) -> Result<Header, NpyError> {
    let bad = |what: String| NpyError::new(Some("header"), format!("malformed header: {what}"));
    let mut p = LitParser {
        s: text.as_bytes(),
        pos: 0,
    };
    let lit = p.value().map_err(bad)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(bad(format!(
            "unexpected text after the dictionary at byte {}",
            p.pos
        )));
    }
    let Lit::Dict(entries) = lit else {
        return Err(bad("not a dictionary".into()));
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (k, v) in entries {
        match (k, v) {
            (Lit::Str(k), Lit::Str(v)) if k == "descr" => descr = Some(v),
            (Lit::Str(k), v) if k == "descr" => {
                return Err(NpyError::new(
                    Some("descr"),
                    format!("structured dtype {v:?} is not float32 (the contract requires `<f4`)"),
                ));
            }
            (Lit::Str(k), Lit::Bool(v)) if k == "fortran_order" => fortran_order = Some(v),
            (Lit::Str(k), Lit::Seq(items)) if k == "shape" => {
                let dims: Option<Vec<usize>> = items
                    .iter()
                    .map(|d| match d {
                        Lit::Int(n) => usize::try_from(*n).ok(),
                        _ => None,
                    })
                    .collect();
                shape = Some(dims.ok_or_else(|| bad("`shape` is not a tuple of integers".into()))?);
            }
            (k, _) => return Err(bad(format!("unexpected entry {k:?}"))),
        }
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
            descr,
            fortran_order,
            shape,
        }),
        _ => Err(bad(
            "it needs `descr`, `fortran_order` and `shape` entries".into()
        )),
    }
}

struct LitParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl LitParser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Lit, String> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                while self.peek() != Some(b'}') {
                    let k = self.value()?;
                    self.expect(b':')?;
                    let v = self.value()?;
                    entries.push((k, v));
                    if !self.comma_or(b'}')? {
                        break;
                    }
                }
                self.expect(b'}')?;
                Ok(Lit::Dict(entries))
            }
            Some(open @ (b'(' | b'[')) => {
                let close = if open == b'(' { b')' } else { b']' };
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek() != Some(close) {
                    items.push(self.value()?);
                    if !self.comma_or(close)? {
                        break;
                    }
                }
                self.expect(close)?;
                Ok(Lit::Seq(items))
            }
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos] != q {
                    if self.s[self.pos] == b'\\' {
                        return Err("escape sequences are not supported".into());
                    }
                    self.pos += 1;
                }
                if self.pos == self.s.len() {
                    return Err("unterminated string".into());
                }
                let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                self.pos += 1;
                Ok(Lit::Str(text))
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).expect("ascii");
                let n = digits
                    .parse()
                    .map_err(|_| format!("integer {digits} is too large"))?;
                // Python 2 wrote long integers with an `L` suffix.
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                Ok(Lit::Int(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(Lit::Bool(true)),
                    b"False" => Ok(Lit::Bool(false)),
                    b"None" => Ok(Lit::None),
                    other => Err(format!("unexpected `{}`", String::from_utf8_lossy(other))),
                }
            }
            Some(c) => Err(format!("unexpected character `{}`", c as char)),
            None => Err("unexpected end".into()),
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.pos))
        }
    }

    /// After an item: consumes a comma and returns `true`, or returns `false` at `close`.
    fn comma_or(&mut self, close: u8) -> Result<bool, String> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(c) if c == close => Ok(false),
            _ => Err(format!(
                "expected `,` or `{}` at byte {}",
                close as char, self.pos
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_with_header(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        let mut header = dict.to_string();
        header.push('\n');
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trips_the_writer() {
        let m = Array2::from_shape_fn((3, 5), |(r, c)| r as f32 * 10.0 + c as f32 - 0.5);
        let mut bytes = Vec::new();
        write_f32_matrix(&mut bytes, &m).unwrap();
        assert_eq!(read_f32_matrix(&bytes[..]).unwrap(), m);
    }

    #[test]
    fn round_trips_int32_and_keeps_the_types_apart() {
        let m = Array2::from_shape_fn((2, 3), |(r, c)| (r as i32 - 1) * 1_000_000 + c as i32);
        let mut bytes = Vec::new();
        write_i32_matrix(&mut bytes, &m).unwrap();
        assert_eq!(read_i32_matrix(&bytes[..]).unwrap(), m);
        let err = read_f32_matrix(&bytes[..]).unwrap_err();
        assert_eq!(err.field, Some("descr"));
        assert!(err.message.contains("`<i4` is not float32"), "{err}");
        let mut floats = Vec::new();
        write_f32_matrix(&mut floats, &Array2::zeros((1, 1))).unwrap();
        let err = read_i32_matrix(&floats[..]).unwrap_err();
        assert_eq!(err.field, Some("descr"));
        assert!(err.message.contains("astype(numpy.int32)"), "{err}");
        let big_endian = npy_with_header(
            1,
            "{'descr': '>i4', 'fortran_order': False, 'shape': (1, 1), }",
            &[0; 4],
        );
        let err = read_i32_matrix(&big_endian[..]).unwrap_err();
        assert!(err.message.contains("big-endian int32"), "{err}");
    }

    #[test]
    fn reads_versions_2_and_3_and_python2_longs() {
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        for (version, dict) in [
            (
                2,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }",
            ),
            (
                3,
                "{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}",
            ),
        ] {
            let m = read_f32_matrix(&npy_with_header(version, dict, &data)[..]).unwrap();
            assert_eq!(m.as_slice().unwrap(), &[1.0, 2.0]);
        }
    }

    #[test]
    fn parses_one_and_zero_dimensional_shapes() {
        for (dict, shape) in [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }",
                vec![7],
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                vec![],
            ),
        ] {
            let bytes = npy_with_header(1, dict, &[]);
            let (header, raw) = read_header(&mut &bytes[..]).unwrap();
            assert_eq!(header.shape, shape);
            assert_eq!(raw, bytes);
            assert_eq!(header.f32_matrix_shape().unwrap_err().field, Some("shape"));
        }
    }

    #[test]
    fn rejects_wrong_dtype_order_and_garbage() {
        let cases = [
            (
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }",
                "descr",
            ),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }",
                "descr",
            ),
            (
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2), }",
                "fortran_order",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                "descr",
            ),
            ("{'descr': '<f4', 'shape': (1, 2), }", "header"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), 'x': 1}",
                "header",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, -2), }",
                "header",
            ),
            ("not a dict", "header"),
        ];
        for (dict, field) in cases {
            let bytes = npy_with_header(1, dict, &[0; 8]);
            let err = read_f32_matrix(&bytes[..]).unwrap_err();
            assert_eq!(err.field, Some(field), "{dict}: {err}");
        }
        assert_eq!(
            read_f32_matrix(&b"PK\x03\x04 zip file"[..])
                .unwrap_err()
                .field,
            Some("magic")
        );
        assert_eq!(
            read_f32_matrix(&b"\x93NUMPY\x01"[..]).unwrap_err().field,
            Some("header")
        );
    }

    #[test]
    fn rejects_truncated_and_extra_data() {
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }";
        let short = npy_with_header(1, dict, &[0; 7]);
        assert!(
            read_f32_matrix(&short[..])
                .unwrap_err()
                .message
                .contains("truncated")
        );
        let long = npy_with_header(1, dict, &[0; 9]);
        assert!(
            read_f32_matrix(&long[..])
                .unwrap_err()
                .message
                .contains("extra bytes")
        );
    }

    #[test]
    fn formats_shapes_like_python() {
        assert_eq!(shape_str(&[3]), "(3,)");
        assert_eq!(shape_str(&[3, 4]), "(3, 4)");
        assert_eq!(shape_str(&[]), "()");
    }
}
