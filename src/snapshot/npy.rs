//! The subset of NumPy's `.npy` format the snapshot contract uses: little-endian float32,
//! C order, two dimensions. Parsed by hand so that a wrong dtype or shape is reported in the
//! contract's own words rather than as a generic decoding error.

use std::io::{self, Write};

use ndarray::Array2;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Writes `matrix` as a version 1.0 `.npy` file body (`<f4`, C order), as `numpy.save` does.
pub fn write_f32_matrix<W: Write>(out: &mut W, matrix: &Array2<f32>) -> io::Result<()> {
    let (rows, cols) = matrix.dim();
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
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
