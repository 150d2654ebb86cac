//! Human output: aligned tables.

use std::io::Write;

use coppice_gateway::client::SandboxInfo;

/// Sandboxes as a table.
///
/// # Errors
/// Writing fails.
pub fn sandbox_table(out: &mut impl Write, sandboxes: &[SandboxInfo]) -> std::io::Result<()> {
    let rows: Vec<[String; 6]> = sandboxes
        .iter()
        .map(|s| {
            let metadata = s
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            [
                s.sandbox_id.clone(),
                s.template_id.clone(),
                s.state.clone(),
                s.started_at.clone(),
                s.end_at.clone(),
                metadata,
            ]
        })
        .collect();
    table(
        out,
        &["ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "METADATA"],
        &rows,
    )
}

/// Rows under a header, each column as wide as its widest cell.
///
/// # Errors
/// Writing fails.
pub fn table<const N: usize>(
    out: &mut impl Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_table_aligns_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["A", "B"],
            &[["long".into(), "x".into()], ["s".into(), "y".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A     B\nlong  x\ns     y\n"
        );
    }
}
